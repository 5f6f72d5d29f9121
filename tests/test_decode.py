"""Decoding with a key/value cache equals the full forward pass, for every hook family.

Not for the rotary scalings whose frequencies follow the current length (dynamic NTK,
LongRoPE): a cached key keeps the frequencies of the step that wrote it (see
:mod:`posenc_jax.encodings.rotary`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.train.decode import decode_step, greedy_decode, init_cache

# embed, rotate (four), bias, contextual, decay
ENCODINGS = ["learned", "rope", "xpos", "fope", "pope", "alibi", "t5", "cope", "fox"]


def _model(name, architecture="decoder"):
    config = pj.models.TransformerConfig(
        vocab_size=12,
        architecture=architecture,
        d_model=16,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        encoding=pj.encodings.get(name),
    )
    return config, pj.models.Transformer(config)


@pytest.mark.parametrize("name", ENCODINGS)
def test_cached_chunks_equal_the_full_forward_pass(name, rng):
    config, model = _model(name)
    tokens = jnp.asarray(rng.integers(1, 12, (2, 9)), jnp.int32)
    positions = jnp.asarray(np.stack([np.arange(9), np.arange(9) + 5]), jnp.int32)
    params = model.init(jax.random.key(0), tokens, positions)["params"]
    full = model.apply({"params": params}, tokens, positions)
    cache = init_cache(config, 2, 9)
    pieces = []
    for start, stop in [(0, 4), (4, 5), (5, 6), (6, 9)]:  # a prefill, then steps
        logits, cache = decode_step(
            config, params, cache, tokens[:, start:stop], positions[:, start:stop]
        )
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("architecture", ["decoder", "encoder_decoder"])
def test_greedy_decode_equals_argmax_of_repeated_full_passes(architecture, rng):
    config, model = _model("rope", architecture)
    prompt = jnp.asarray(rng.integers(1, 12, (2, 4)), jnp.int32)
    extra = (
        {"source": jnp.asarray(rng.integers(1, 12, (2, 6)), jnp.int32)}
        if architecture != "decoder"
        else {}
    )
    params = model.init(jax.random.key(1), prompt, **extra)["params"]
    positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
    generated = greedy_decode(config, params, prompt, positions, 5, **extra)
    sequence = prompt
    for _ in range(5):
        logits = model.apply({"params": params}, sequence, **extra)
        sequence = jnp.concatenate([sequence, jnp.argmax(logits[:, -1:], -1).astype(jnp.int32)], 1)
    np.testing.assert_array_equal(generated, sequence[:, 4:])


def test_decode_errors():
    config, _ = _model("nope", "encoder")
    with pytest.raises(ValueError, match="no autoregressive decoding"):
        init_cache(config, 1, 4)
    config, _ = _model("nope")
    with pytest.raises(ValueError, match="expected \\[B, P \\+ num_tokens - 1\\]"):
        greedy_decode(config, {}, jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3), jnp.int32), 4)
    with pytest.raises(ValueError, match="attention='multi_head'"):
        dataclasses.replace(config, attention="multi_token", decode=True)


def test_greedy_decoding_of_answers_at_different_offsets(rng):
    """A padded batch of copy examples of lengths 5 and 3: each row is decoded from its own
    prompt, exactly as the same example alone with greedy_decode's prefill."""
    from posenc_jax.data import get_task
    from posenc_jax.train.decode import answer_spans, greedy_fill, greedy_metric_sums

    config, model = _model("alibi")
    task = get_task("copy", alphabet_size=10)
    batch = task.sample(jax.random.key(3), 6, 5, min_length=1)
    lengths = np.asarray(batch["padding_mask"]).sum(1)
    assert len(set(lengths.tolist())) > 1  # rows of different lengths
    params = model.init(jax.random.key(0), batch["inputs"])["params"]
    positions = jnp.broadcast_to(jnp.arange(batch["inputs"].shape[1]), batch["inputs"].shape)
    starts = answer_spans(batch["weights"])
    generated = np.asarray(
        greedy_fill(config, params, batch["inputs"], positions, jnp.asarray(starts + 1))
    )
    for row, start in enumerate(starts):
        n = lengths[row] // 2  # a copy example of length n has 2n real input tokens
        prompt = batch["inputs"][row : row + 1, : start + 1]
        alone = greedy_decode(config, params, prompt, positions[:1, : start + n], n)
        np.testing.assert_array_equal(generated[row, start : start + n], alone[0])
    sums = greedy_metric_sums(config, params, batch, {"positions": positions})
    answer = np.asarray(batch["weights"]) > 0
    right = (generated == np.asarray(batch["targets"])) | ~answer
    assert sums["greedy_correct_sequences"] == np.all(right, axis=1).sum()
    assert sums["greedy_tokens"] == answer.sum()
