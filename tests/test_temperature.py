"""Length-dependent attention temperature: factor values and its effect on attention."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import AttentionTemperature, dot_product_attention
from posenc_jax.attention.temperature import log_length_scale, log_position_scale


def test_log_position_scale_is_one_inside_training_length_and_log_base_n_beyond():
    """Qwen ``logn``: position p (0-based) gets log_N(p + 1) once p + 1 exceeds N."""
    training_length = 8
    positions = np.arange(40)
    want = np.array(
        [1.0 if p + 1 <= training_length else math.log(p + 1, training_length) for p in positions]
    )
    got = log_position_scale(positions[None], training_length)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    np.testing.assert_array_equal(got[0, :training_length], 1.0)
    np.testing.assert_allclose(got[0, 7], 1.0)  # p + 1 = N: log_N(N) = 1 on both sides
    assert got[0, 8] > 1.0


def test_log_length_scale_values():
    """Chiang & Cholak: logits times ln n; normalized by ln N it is 1 at the training length."""
    assert log_length_scale(100) == pytest.approx(math.log(100))
    assert log_length_scale(64, training_length=64) == pytest.approx(1.0)
    assert log_length_scale(512, training_length=64) == pytest.approx(1.5)
    factor = AttentionTemperature("log_length")(jnp.zeros((2, 5), jnp.int32), 1000)
    np.testing.assert_allclose(factor, np.full((2, 5), math.log(1000)), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "softmax"}, "valid: log_length, log_position"),
        ({"kind": "log_position"}, "needs training_length"),
        ({"kind": "log_length", "training_length": 1}, "integer >= 2"),
    ],
)
def test_bad_temperature_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionTemperature(**kwargs)


def _reference_tempered_attention(q, k, v, bias, factor, allowed):
    """softmax_j(tau_i (q_i.k_j / sqrt(d) + b_ij)) v_j in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("blhk,bshk->bhls", q, k) / np.sqrt(q.shape[-1]) + bias
    logits = np.asarray(factor, np.float64)[:, None, :, None] * logits
    logits = np.where(allowed, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("bhls,bshk->blhk", weights, v)


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_temperature_multiplies_each_query_row(rng, implementation):
    """Queries past the training length are sharpened; dense and chunked agree."""
    batch, length, heads, dim, training_length = 2, 11, 2, 8, 4
    q, k, v = (rng.standard_normal((batch, length, heads, dim)).astype(np.float32) for _ in "qkv")
    positions = np.arange(length) + 2  # some queries inside, most beyond the training length
    slopes = np.array([0.5, 0.125])
    distance = np.abs(positions[:, None] - positions[None, :])
    bias = -slopes[:, None, None] * distance[None]
    temperature = AttentionTemperature("log_position", training_length=training_length)

    def bias_fn(q_positions, k_positions):
        pair_distance = jnp.abs(q_positions[:, None, :, None] - k_positions[:, None, None, :])
        return -jnp.asarray(slopes, jnp.float32)[None, :, None, None] * pair_distance

    got = jax.jit(
        lambda q, k, v: dot_product_attention(
            q,
            k,
            v,
            bias_fn=bias_fn,
            causal=True,
            q_positions=positions,
            k_positions=positions,
            temperature=temperature,
            implementation=implementation,
            block_size=4 if implementation == "chunked" else None,
        )
    )(q, k, v)
    factor = np.broadcast_to(
        [max(1.0, math.log(p + 1, training_length)) for p in positions], (batch, length)
    )
    allowed = np.tril(np.ones((length, length), bool))[None, None]
    want = _reference_tempered_attention(q, k, v, bias[None], factor, allowed)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_transformer_config_passes_the_temperature(rng):
    """Inside the training length 'log_position' changes nothing; past it, it does."""
    tokens = jnp.asarray(rng.integers(0, 7, (1, 6)), jnp.int32)
    plain = pj.models.TransformerConfig(vocab_size=7, d_model=16, num_layers=1, num_heads=2)
    tempered = dataclasses.replace(
        plain, attention_temperature=AttentionTemperature("log_position", training_length=8)
    )
    params = jax.jit(pj.models.Transformer(plain).init)(jax.random.key(0), tokens)
    plain_apply = jax.jit(pj.models.Transformer(plain).apply)
    tempered_apply = jax.jit(pj.models.Transformer(tempered).apply)
    inside = np.arange(6)
    np.testing.assert_array_equal(
        tempered_apply(params, tokens, inside), plain_apply(params, tokens, inside)
    )
    beyond = np.arange(6) + 100
    assert not np.allclose(
        tempered_apply(params, tokens, beyond), plain_apply(params, tokens, beyond)
    )


def test_log_floor_is_llama4s_query_temperature():
    """Hugging Face Llama4TextAttention on NoPE layers: queries at index p times
    ``log1p(floor((p + 1) / floor_scale)) * attn_scale + 1`` with the released 8192, 0.1."""
    positions = np.array([0, 8189, 8190, 8191, 16382, 16383, 57343, 999_999])
    want = 1.0 + 0.1 * np.log(np.floor((positions + 1) / 8192.0) + 1.0)
    got = AttentionTemperature("log_floor")(jnp.asarray(positions[None]), 1)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    np.testing.assert_array_equal(got[0, :3], 1.0)
    assert got[0, 3] > 1.0


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_log_floor_on_a_nope_layer_is_the_scaled_query(rng, implementation):
    """Without a bias, multiplying a query's logit row is multiplying the query, as the
    Hugging Face code does (small floor_scale so that the steps fall inside 12 tokens)."""
    q, k, v = (jnp.asarray(rng.standard_normal((2, 12, 2, 8)), jnp.float32) for _ in "qkv")
    temperature = AttentionTemperature("log_floor", floor_scale=3, scale=0.5)
    block = 4 if implementation == "chunked" else None
    got = dot_product_attention(
        q,
        k,
        v,
        causal=True,
        temperature=temperature,
        implementation=implementation,
        block_size=block,
    )
    factor = 1.0 + 0.5 * np.log1p(np.floor((np.arange(12) + 1) / 3))
    want = dot_product_attention(q * factor[None, :, None, None], k, v, causal=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, dot_product_attention(q, k, v, causal=True), atol=1e-3)
