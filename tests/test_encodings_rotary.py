"""The registered rotary encodings: the rotate hook, its conventions, and use in a Transformer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax import encodings, functional
from posenc_jax.models import Transformer, TransformerConfig

ROTARY = [
    "rope",
    "rope_pi",
    "rope_ntk",
    "rope_dynamic_ntk",
    "rope_yarn",
    "rope_llama3",
    "rope_longrope",
    "xpos",
    "p_rope",
]


def rotate(encoding, q, k, q_positions, k_positions):
    """Runs the rotate hook of an unbound encoding (rotary encodings have no parameters)."""
    return encoding.apply({}, "rotate", q, k, q_positions, k_positions)


def reference_rotate_half(x, positions, inv_freq):
    """Half layout, float64: pair (t, t + d/2) turned by positions * inv_freq[t]."""
    x = np.asarray(x, np.float64)
    out = x.copy()
    half = len(inv_freq)
    for t in range(half):
        angle = np.asarray(positions, np.float64)[..., None] * inv_freq[t]
        a, b = x[..., t], x[..., t + half]
        out[..., t] = np.cos(angle) * a - np.sin(angle) * b
        out[..., t + half] = np.sin(angle) * a + np.cos(angle) * b
    return out


def logits(q, k):
    """q [B, L, H, K] . k [B, S, G, K] with H = G."""
    return np.einsum("blhk,bshk->bhls", np.asarray(q, np.float64), np.asarray(k, np.float64))


def test_every_rotary_encoding_is_registered():
    assert set(ROTARY) <= set(encodings.names())
    assert encodings.get_class("xpos").causal_only
    assert not any(encodings.get_class(name).causal_only for name in ROTARY if name != "xpos")
    assert encodings.hyperparameters(encodings.get_class("rope")) == {
        "layout": "half",
        "base": 10000.0,
        "rotary_fraction": 1.0,
    }
    assert encodings.hyperparameters(encodings.get_class("rope_llama3"))["base"] == 500000.0


def decoder_config(encoding):
    return TransformerConfig(
        vocab_size=11, d_model=32, num_layers=1, num_heads=2, num_kv_heads=1, encoding=encoding
    )


@pytest.fixture(scope="module")
def decoder_params():
    """Rotary encodings own no parameters, so one set of weights serves every one of them."""
    tokens = jnp.zeros((1, 6), jnp.int32)
    return jax.jit(Transformer(decoder_config(encodings.get("rope"))).init)(
        jax.random.key(0), tokens
    )


@pytest.mark.parametrize("name", ROTARY)
def test_runs_in_a_causal_decoder_and_sees_only_relative_positions(name, decoder_params):
    """Under jit; shifting every position leaves the logits unchanged (all are relative).

    The shift stays below the original context of the length-dependent encodings (dynamic
    NTK, LongRoPE: 2048 by default), whose frequencies would otherwise change.
    """
    model = Transformer(decoder_config(encodings.get(name)))
    tokens = np.random.default_rng(0).integers(0, 11, (1, 6))
    # rows 0 and 1: the same tokens at positions 0..5 and 1000..1005
    tokens = jnp.asarray(np.concatenate([tokens, tokens]))
    positions = jnp.asarray(np.arange(6) + np.array([[0], [1000]]))
    out = jax.jit(model.apply)(decoder_params, tokens, positions)
    assert out.shape == (2, 6, 11)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out[1], out[0], atol=2e-5)


def test_xpos_refuses_bidirectional_attention():
    config = TransformerConfig(
        vocab_size=11,
        architecture="encoder",
        d_model=16,
        num_layers=1,
        num_heads=2,
        encoding=encodings.get("xpos"),
    )
    tokens = jnp.zeros((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="causal attention only"):
        Transformer(config).init(jax.random.key(0), tokens)


def test_rope_hook_rotates_q_and_k_with_grouped_heads(rng):
    q = rng.standard_normal((2, 4, 4, 8)).astype(np.float32)
    k = rng.standard_normal((2, 5, 2, 8)).astype(np.float32)
    q_positions = np.array([[3, 4, 5, 6], [0, 10, 20, 30]])
    k_positions = np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    new_q, new_k = rotate(encodings.get("rope", base=100.0), q, k, q_positions, k_positions)
    inv_freq = 100.0 ** (-np.arange(0, 8, 2) / 8)
    np.testing.assert_allclose(new_q, reference_rotate_half(q, q_positions, inv_freq), atol=2e-6)
    np.testing.assert_allclose(new_k, reference_rotate_half(k, k_positions, inv_freq), atol=2e-6)


def test_interleaved_layout_hook(rng):
    q = rng.standard_normal((1, 3, 1, 8)).astype(np.float32)
    positions = np.array([[0, 7, 300]])
    new_q, _ = rotate(encodings.get("rope", layout="interleaved"), q, q, positions, positions)
    inv_freq, _ = functional.rope_inv_freq(8)
    np.testing.assert_allclose(
        new_q, functional.apply_rope(q, positions, inv_freq, layout="interleaved")
    )


def test_partial_rotary_leaves_the_rest_of_the_head(rng):
    """GPT-NeoX rotary_pct: the first int(K * fraction) features, exponent over that count."""
    q = rng.standard_normal((1, 3, 2, 16)).astype(np.float32)
    positions = np.array([[0, 9, 77]])
    new_q, _ = rotate(encodings.get("rope", rotary_fraction=0.25), q, q, positions, positions)
    np.testing.assert_array_equal(new_q[..., 4:], q[..., 4:])
    inv_freq = 10000.0 ** (-np.arange(0, 4, 2) / 4)
    np.testing.assert_allclose(
        new_q[..., :4], reference_rotate_half(q[..., :4], positions, inv_freq), atol=2e-6
    )


@pytest.mark.parametrize(
    "kwargs, head_dim, match",
    [
        ({}, 7, "7 must be a positive even number"),
        ({"rotary_fraction": 0.5}, 6, "3 must be a positive even number"),
        ({"rotary_fraction": 0.0}, 8, r"rotary_fraction must be in \(0, 1\]"),
        ({"layout": "neox"}, 8, "unknown RoPE layout"),
    ],
)
def test_bad_rotated_dimension_is_an_error(kwargs, head_dim, match):
    x = jnp.ones((1, 2, 1, head_dim))
    positions = jnp.arange(2)[None]
    with pytest.raises(ValueError, match=match):
        rotate(encodings.get("rope", **kwargs), x, x, positions, positions)


def test_dynamic_ntk_length_comes_from_positions_not_shapes(rng):
    """Four tokens at positions 5000..5003: the current length is 5004, not 4."""
    q = rng.standard_normal((1, 4, 1, 8)).astype(np.float32)
    positions = 5000 + np.arange(4)[None]
    encoding = encodings.get("rope_dynamic_ntk", factor=2.0, original_max_position_embeddings=4096)
    scaling = functional.DynamicNTKScaling(factor=2.0, original_max_position_embeddings=4096)
    inv_freq, _ = functional.rope_inv_freq(8, scaling=scaling, seq_len=5004)
    want = functional.apply_rope(q, positions, inv_freq)
    eager_q, _ = rotate(encoding, q, q, positions, positions)
    np.testing.assert_allclose(eager_q, want, atol=1e-6)
    # Under jit the length is a traced scalar; its frequencies come from the host in float64.
    jit_q, _ = jax.jit(lambda q, p: rotate(encoding, q, q, p, p))(q, positions)
    np.testing.assert_allclose(jit_q, want, atol=1e-5)
    unscaled, _ = rotate(encodings.get("rope"), q, q, positions, positions)
    assert np.max(np.abs(np.asarray(eager_q) - np.asarray(unscaled))) > 0.1


def test_longrope_switches_factors_and_scales_q_and_k(rng):
    q = rng.standard_normal((1, 2, 1, 8)).astype(np.float32)
    k = rng.standard_normal((1, 2, 1, 8)).astype(np.float32)
    short, long = (1.0, 1.5, 2.0, 3.0), (1.0, 4.0, 9.0, 16.0)
    encoding = encodings.get(
        "rope_longrope",
        short_factor=short,
        long_factor=long,
        original_max_position_embeddings=64,
        factor=16.0,
    )
    scale = math.sqrt(1 + math.log(16.0) / math.log(64))
    default = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    for positions, factors in ((np.array([[10, 63]]), short), (np.array([[10, 64]]), long)):
        for run in (rotate, jax.jit(rotate, static_argnums=0)):
            new_q, new_k = run(encoding, q, k, positions, positions)
            inv_freq = default / np.array(factors)
            np.testing.assert_allclose(
                new_q, scale * reference_rotate_half(q, positions, inv_freq), atol=1e-5
            )
            np.testing.assert_allclose(
                new_k, scale * reference_rotate_half(k, positions, inv_freq), atol=1e-5
            )


def test_yarn_attention_scale_multiplies_logits_by_its_square(rng):
    q = rng.standard_normal((1, 3, 2, 16)).astype(np.float32)
    k = rng.standard_normal((1, 3, 2, 16)).astype(np.float32)
    positions = np.array([[0, 1, 2]])
    yarn = encodings.get("rope_yarn", factor=4.0, original_max_position_embeddings=64)
    new_q, new_k = rotate(yarn, q, k, positions, positions)
    scaling = functional.YaRNScaling(factor=4.0, original_max_position_embeddings=64)
    inv_freq, scale = functional.rope_inv_freq(16, scaling=scaling)
    assert scale == pytest.approx(0.1 * math.log(4.0) + 1)
    plain_q = functional.apply_rope(q, positions, inv_freq)
    plain_k = functional.apply_rope(k, positions, inv_freq)
    np.testing.assert_allclose(
        logits(new_q, new_k), scale**2 * logits(plain_q, plain_k), rtol=1e-5, atol=1e-5
    )


def test_p_rope_hook_extremes(rng):
    q = rng.standard_normal((1, 3, 2, 16)).astype(np.float32)
    positions = np.array([[0, 50, 900]])
    nope_q, _ = rotate(encodings.get("p_rope", p=0.0), q, q, positions, positions)
    np.testing.assert_array_equal(nope_q, q)
    full_q, _ = rotate(encodings.get("p_rope", p=1.0), q, q, positions, positions)
    rope_q, _ = rotate(encodings.get("rope"), q, q, positions, positions)
    np.testing.assert_array_equal(full_q, rope_q)
    half_q, _ = rotate(encodings.get("p_rope", p=0.5), q, q, positions, positions)
    # the slowest half of the pairs (t >= 4 of 8: features 4..7 and 12..15) never rotate
    still = np.r_[4:8, 12:16]
    np.testing.assert_array_equal(np.asarray(half_q)[..., still], q[..., still])


def test_xpos_hook_decays_with_distance(rng):
    """Logits = sum_t zeta_t^((n - m)/512) x (the RoPE term of pair t)."""
    q = rng.standard_normal((1, 4, 1, 8)).astype(np.float32)
    k = rng.standard_normal((1, 4, 1, 8)).astype(np.float32)
    positions = np.array([[0, 100, 700, 2000]])
    new_q, new_k = rotate(encodings.get("xpos"), q, k, positions, positions)
    inv_freq = 10000.0 ** (-np.arange(0, 8, 2) / 8)
    zeta = (np.arange(0, 8, 2) / 8 + 0.4) / 1.4
    rq = reference_rotate_half(q, positions, inv_freq)[0, :, 0]
    rk = reference_rotate_half(k, positions, inv_freq)[0, :, 0]
    want = np.zeros((4, 4))
    for n in range(4):
        for m in range(4):
            decay = zeta ** ((positions[0, n] - positions[0, m]) / 512.0)
            decay = np.concatenate([decay, decay])  # half layout: pair t is (t, t + 4)
            want[n, m] = np.sum(decay * rq[n] * rk[m])
    np.testing.assert_allclose(logits(new_q, new_k)[0, 0], want, rtol=1e-4, atol=1e-5)
