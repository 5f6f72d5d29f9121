"""Per-example lengths: a padded example's real tokens get the logits they get unpadded.

Training on a range of lengths pads every example to one width (one compiled shape). That
is only the same model as training on each length alone if padding changes nothing on the
real tokens: no query attends a padded key, and every term that depends on the sequence's
length (the normalized baseline, dynamic NTK, LongRoPE's switch, the log-length
temperature, randomized positions) uses the example's own length, not the padded width.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import AttentionTemperature

WIDTH, SHORT, VOCAB = 10, 6, 11

# Every family: none, embed (fixed, learned, the two naive baselines), rotate (plain, the
# length-dependent scalings with their original context inside the short example so the
# scaling is active, xPos, p-RoPE), bias (fixed and learned), contextual (Shaw, TXL, CoPE),
# decay (FoX, Cable).
ENCODINGS = {
    "nope": {},
    "sinusoidal": {},
    "learned": {"max_length": 16},
    "normalized": {},
    "integer": {},
    "rope": {},
    "rope_dynamic_ntk": {"factor": 2.0, "original_max_position_embeddings": 3},
    # Short and long factors differ here: 6 tokens are "short", the padded 10 "long".
    "rope_longrope": {"original_max_position_embeddings": 8},
    "rope_yarn": {"original_max_position_embeddings": 4},
    "xpos": {},
    "p_rope": {},
    "alibi": {},
    "t5": {},
    "kerple_log": {},
    "sandwich": {"dim": 8},
    "fire": {},
    "shaw": {},
    "transformer_xl": {},
    "cope": {},
    "fox": {},
    "cable": {},
}


def _config(name, architecture="decoder", **overrides):
    return pj.models.TransformerConfig(
        vocab_size=VOCAB,
        architecture=architecture,
        d_model=16,
        num_layers=2,
        num_heads=2,
        mlp_dim=32,
        encoding=pj.encodings.get(name, **ENCODINGS.get(name, {})),
        **overrides,
    )


def _padded_and_alone(config, positions=None, *, seed=0):
    """Logits of row 1's real tokens inside a padded batch, and of the same tokens alone."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (2, WIDTH)).astype(np.int32)
    tokens[1, SHORT:] = 0
    padding_mask = np.arange(WIDTH)[None, :] < np.array([[WIDTH], [SHORT]])
    if positions is None:
        positions = np.broadcast_to(np.arange(WIDTH, dtype=np.int32), (2, WIDTH))
    model = pj.models.Transformer(config)
    params = {"params": jax.jit(model.init)(jax.random.key(seed), tokens, positions)["params"]}
    apply = jax.jit(model.apply)
    padded = apply(params, tokens, positions, padding_mask=padding_mask)
    alone = apply(params, tokens[1:, :SHORT], positions[1:, :SHORT])
    return np.asarray(padded[1, :SHORT]), np.asarray(alone[0])


def _no_padding_logits(config):
    """Row 1 when the batch is not marked as padded: the padded width's numbers."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, (2, WIDTH)).astype(np.int32)
    tokens[1, SHORT:] = 0
    model = pj.models.Transformer(config)
    params = {"params": jax.jit(model.init)(jax.random.key(0), tokens)["params"]}
    return np.asarray(jax.jit(model.apply)(params, tokens)[1, :SHORT])


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_decoder_padded_example_matches_unpadded(name):
    padded, alone = _padded_and_alone(_config(name))
    np.testing.assert_allclose(padded, alone, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name", sorted(n for n in ENCODINGS if not pj.encodings.get_class(n).causal_only)
)
def test_encoder_padded_example_matches_unpadded(name):
    """Bidirectional attention: without the padding mask the padded keys would be attended."""
    padded, alone = _padded_and_alone(_config(name, architecture="encoder"))
    np.testing.assert_allclose(padded, alone, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["normalized", "rope_dynamic_ntk", "rope_longrope"])
def test_length_dependent_encodings_need_the_own_length(name):
    """The check above can fail: read without padding marks, the padded width changes these
    encodings' numbers on the real tokens (causal attention alone hides the padded keys)."""
    _, alone = _padded_and_alone(_config(name))
    assert np.max(np.abs(_no_padding_logits(_config(name)) - alone)) > 1e-3


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
@pytest.mark.parametrize("causal", [True, False])
def test_log_length_temperature_counts_real_keys(implementation, causal):
    """The temperature counts the keys a query may attend: its causal prefix, real keys."""
    config = _config(
        "alibi",
        architecture="decoder" if causal else "encoder",
        attention_temperature=AttentionTemperature("log_length", training_length=4),
        attention_implementation=implementation,
        attention_block_size=4 if implementation == "chunked" else None,
    )
    padded, alone = _padded_and_alone(config)
    np.testing.assert_allclose(padded, alone, atol=2e-5, rtol=1e-5)


def test_attendable_keys_against_a_count():
    rng = np.random.default_rng(1)
    q_positions = rng.integers(0, 12, (3, 5)).astype(np.int32)
    k_positions = rng.integers(0, 12, (3, 7)).astype(np.int32)
    padding = rng.random((3, 7)) < 0.7
    causal = pj.attention.ops.attendable_keys(
        jnp.asarray(q_positions), jnp.asarray(k_positions), causal=True, padding_mask=padding
    )
    want = ((k_positions[:, None, :] <= q_positions[:, :, None]) & padding[:, None, :]).sum(-1)
    np.testing.assert_array_equal(causal, want)
    both = pj.attention.ops.attendable_keys(
        jnp.asarray(q_positions), jnp.asarray(k_positions), causal=False, padding_mask=padding
    )
    np.testing.assert_array_equal(both, np.broadcast_to(padding.sum(-1)[:, None], (3, 5)))


@pytest.mark.parametrize("base", ["rope", "learned", "alibi"])
def test_randomized_positions_of_a_padded_example_are_its_own(base):
    """Row b's real tokens get the positions the row gets at its own length; the model then
    gives them the same logits."""
    kwargs = {"base_kwargs": {"max_length": 64}} if base == "learned" else {}
    encoding = pj.encodings.get("randomized", base=base, max_position=64, **kwargs)
    key = jax.random.key(7)
    lengths = jnp.asarray([WIDTH, SHORT])
    padded = np.asarray(encoding.sample_positions(key, 2, WIDTH, lengths=lengths))
    np.testing.assert_array_equal(padded[0], encoding.sample_positions(key, 2, WIDTH)[0])
    np.testing.assert_array_equal(padded[1, :SHORT], encoding.sample_positions(key, 2, SHORT)[1])
    assert np.all(np.diff(padded[1, :SHORT]) > 0)
    assert len(set(padded[1].tolist())) == WIDTH  # padding slots are distinct positions too
    config = dataclasses.replace(_config("nope"), encoding=encoding)
    got, want = _padded_and_alone(config, positions=padded)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_chunked_padding_mask_equals_dense():
    rng = np.random.default_rng(2)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 9, 2, 4)), jnp.float32) for _ in "qkv")
    padding = jnp.asarray(np.arange(9)[None, :] < np.array([[9], [5]]))
    alibi = pj.encodings.get("alibi").bind({}).bias_fn(num_heads=2, causal=False)

    def attend(implementation, block_size=None):
        return pj.attention.dot_product_attention(
            q,
            k,
            v,
            bias_fn=alibi,
            padding_mask=padding,
            implementation=implementation,
            block_size=block_size,
        )

    dense = attend("dense")
    np.testing.assert_allclose(attend("chunked", 4), dense, atol=1e-6)
    # Padded keys are never attended: changing them changes nothing.
    k2 = k.at[1, 5:].set(100.0)
    again = pj.attention.dot_product_attention(
        q, k2, v, bias_fn=alibi, padding_mask=padding, implementation="chunked", block_size=4
    )
    np.testing.assert_allclose(again, dense, atol=1e-6)


def test_padding_mask_must_match_the_tokens():
    model = pj.models.Transformer(_config("nope"))
    tokens = jnp.ones((2, 4), jnp.int32)
    params = model.init(jax.random.key(0), tokens)
    with pytest.raises(ValueError, match="padding_mask has shape"):
        model.apply(params, tokens, padding_mask=jnp.ones((2, 3), bool))
