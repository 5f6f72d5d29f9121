"""Decoding with a key/value cache equals the full forward pass, for every hook family.

Not for the rotary scalings whose frequencies follow the current length (dynamic NTK,
LongRoPE): a cached key keeps the frequencies of the step that wrote it (see
:mod:`posenc_jax.encodings.rotary`)."""

import dataclasses
import functools

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


# --- A full cache is an error, never an overwritten last slot ------------------------------


def _cached_layer(**kwargs):
    layer = pj.attention.MultiHeadAttention(num_heads=2, causal=True, decode=True, **kwargs)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 6, 8)), jnp.float32)
    variables = layer.init(jax.random.key(0), x[:, :4])  # a cache of 4 positions
    return layer, variables["params"], variables["cache"], x


def _feed(layer, params, cache, x, start):
    """Feeds ``x [B, l, D]`` at positions ``start .. start + l - 1``."""
    out, variables = layer.apply(
        {"params": params, "cache": cache},
        x,
        q_positions=start + jnp.arange(x.shape[1], dtype=jnp.int32),
        mutable=["cache"],
    )
    return out, variables["cache"]


def test_writing_past_a_full_cache_is_an_error_when_the_index_is_known():
    """4 slots, 6 tokens one at a time: the fifth was written over the fourth (positions
    [0 1 2 4]) and attention ran on a wrong sequence."""
    layer, params, cache, x = _cached_layer()
    for t in range(4):
        _, cache = _feed(layer, params, cache, x[:, t : t + 1], t)
    np.testing.assert_array_equal(cache["cached_positions"], [[0, 1, 2, 3]])
    with pytest.raises(ValueError, match="cache holds 4 positions and 4 are written; 1 more"):
        _feed(layer, params, cache, x[:, 4:5], 4)
    _, _, empty, _ = _cached_layer()
    with pytest.raises(ValueError, match="cache holds 4 positions and 0 are written; 6 more"):
        _feed(layer, params, empty, x, 0)


def test_writing_past_a_full_cache_is_an_error_when_run_under_jit():
    layer, params, cache, x = _cached_layer()
    step = jax.jit(lambda cache, x, position: _feed(layer, params, cache, x, position))
    for t in range(4):
        _, cache = step(cache, x[:, t : t + 1], t)
    with pytest.raises(jax.errors.JaxRuntimeError, match="cache holds 4 positions and 4 are"):
        jax.block_until_ready(step(cache, x[:, 4:5], 4))


def test_a_cache_inside_a_scan_reports_the_overflow():
    """The index is traced inside lax.scan (as in greedy_decode): the check runs on it."""
    layer, params, cache, x = _cached_layer()

    def run(cache, num_steps):
        def step(cache, t):
            token = jax.lax.dynamic_slice_in_dim(x, t, 1, axis=1)
            out, cache = _feed(layer, params, cache, token, t)
            return cache, out

        return jax.lax.scan(step, cache, jnp.arange(num_steps))

    jax.block_until_ready(jax.jit(run, static_argnums=1)(cache, 4))  # fits
    with pytest.raises(jax.errors.JaxRuntimeError, match="4 are written; 1 more do not fit"):
        jax.block_until_ready(jax.jit(run, static_argnums=1)(cache, 6))


def test_a_position_at_the_empty_slot_marker_is_an_error():
    """Empty slots sit at position 2**30; a query there would attend them."""
    from posenc_jax.attention.multi_head import EMPTY_CACHE_POSITION

    layer, params, cache, x = _cached_layer()
    with pytest.raises(ValueError, match=f"positions below {EMPTY_CACHE_POSITION}"):
        _feed(layer, params, cache, x[:, :1], EMPTY_CACHE_POSITION)


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
@pytest.mark.parametrize("window", [None, 5])
def test_log_length_temperature_cached_equals_the_full_pass(implementation, window):
    """12 tokens decoded one at a time into a 32-slot cache: a query counts the keys it may
    attend (its causal prefix), not the cache's empty slots."""
    temperature = pj.attention.AttentionTemperature("log_length")
    full = pj.attention.MultiHeadAttention(
        num_heads=2,
        causal=True,
        encoding=pj.encodings.get("alibi"),
        temperature=temperature,
        window=window,
        implementation=implementation,
        block_size=4 if implementation == "chunked" else None,
    )
    decoding = full.clone(decode=True)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 12, 8)), jnp.float32)
    params = full.init(jax.random.key(0), x)["params"]
    want = full.apply({"params": params}, x)
    cache = decoding.init(jax.random.key(0), jnp.zeros((2, 32, 8)))["cache"]
    step = jax.jit(functools.partial(_feed, decoding, params))
    pieces = []
    for t in range(12):
        out, cache = step(cache, x[:, t : t + 1], t)
        pieces.append(out)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), want, atol=2e-6, rtol=1e-5)
