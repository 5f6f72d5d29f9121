"""The dense attention core against a float64 numpy reference, and its input contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.attention import dot_product_attention
from posenc_jax.attention.ops import masked_softmax
from tests.reference import reference_attention


def _qkv(rng, batch=2, q_len=5, k_len=7, heads=4, kv_heads=4, dim=8, dtype=np.float32):
    q = rng.standard_normal((batch, q_len, heads, dim)).astype(dtype)
    k = rng.standard_normal((batch, k_len, kv_heads, dim)).astype(dtype)
    v = rng.standard_normal((batch, k_len, kv_heads, dim)).astype(dtype)
    return q, k, v


def test_matches_reference_with_bias_and_mask(rng):
    q, k, v = _qkv(rng)
    bias = rng.standard_normal((4, 5, 7)).astype(np.float32)
    mask = rng.random((2, 1, 5, 7)) > 0.3
    got = jax.jit(
        lambda q, k, v, m: dot_product_attention(q, k, v, bias_fn=lambda qp, kp: bias, mask=m)
    )(q, k, v, mask)
    np.testing.assert_allclose(
        got, reference_attention(q, k, v, bias=bias[None], allowed=mask), atol=1e-5
    )


def test_causal_is_defined_by_positions(rng):
    q, k, v = _qkv(rng, q_len=6, k_len=6)
    q_positions = np.array([[3, 4, 5, 6, 7, 8], [0, 1, 2, 3, 4, 5]])
    got = dot_product_attention(
        q, k, v, causal=True, q_positions=q_positions, k_positions=q_positions
    )
    allowed = q_positions[:, None, None, :] <= q_positions[:, None, :, None]
    np.testing.assert_allclose(got, reference_attention(q, k, v, allowed=allowed), atol=1e-5)
    # With arange positions it is the usual lower triangle.
    lower = np.tril(np.ones((6, 6), bool))[None, None]
    np.testing.assert_allclose(
        dot_product_attention(q, k, v, causal=True),
        reference_attention(q, k, v, allowed=lower),
        atol=1e-5,
    )


def test_decoding_query_attends_to_its_prefix(rng):
    """One query at position t against a cache of keys: positions make it the same code path."""
    q, k, v = _qkv(rng, q_len=1, k_len=6)
    got = dot_product_attention(
        q, k, v, causal=True, q_positions=np.array([3]), k_positions=np.arange(6)
    )
    allowed = (np.arange(6) <= 3)[None, None, None, :]
    np.testing.assert_allclose(got, reference_attention(q, k, v, allowed=allowed), atol=1e-5)


def test_fully_masked_rows_are_zero_in_values_and_gradients(rng):
    q, k, v = _qkv(rng)
    mask = np.ones((2, 1, 5, 7), bool)
    mask[:, :, 2] = False
    out = dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_array_equal(out[:, 2], 0.0)
    grads = jax.grad(
        lambda q, k, v: dot_product_attention(q, k, v, mask=mask).sum(), argnums=(0, 1, 2)
    )(q, k, v)
    for g in grads:
        assert np.all(np.isfinite(g))
    np.testing.assert_array_equal(grads[0][:, 2], 0.0)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_equals_multi_head_with_repeated_kv(rng, kv_heads):
    q, k, v = _qkv(rng, heads=4, kv_heads=kv_heads)
    grouped = dot_product_attention(
        q, k, v, causal=True, q_positions=np.arange(5), k_positions=np.arange(7)
    )
    repeated = dot_product_attention(
        q,
        np.repeat(k, 4 // kv_heads, axis=2),
        np.repeat(v, 4 // kv_heads, axis=2),
        causal=True,
        q_positions=np.arange(5),
        k_positions=np.arange(7),
    )
    np.testing.assert_allclose(grouped, repeated, atol=1e-6)


def test_bfloat16_inputs_keep_dtype_and_stay_close(rng):
    q, k, v = _qkv(rng)
    got = dot_product_attention(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)))
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float32), reference_attention(q, k, v), atol=5e-2)


def test_input_contract_errors(rng):
    q, k, v = _qkv(rng)
    with pytest.raises(AssertionError, match="must be \\[B, L, H, K\\]"):
        dot_product_attention(q[0], k, v)
    with pytest.raises(AssertionError, match="must share \\[B, S, G\\]"):
        dot_product_attention(q, k, v[:, :3])
    with pytest.raises(AssertionError, match="cast them"):
        dot_product_attention(q, k.astype(np.float16), v.astype(np.float16))
    with pytest.raises(AssertionError, match="head dim"):
        dot_product_attention(q, k[..., :4], v[..., :4])
    q3, k3, v3 = _qkv(rng, heads=3, kv_heads=2)
    with pytest.raises(ValueError, match="multiple of the number of key/value heads"):
        dot_product_attention(q3, k3, v3)
    with pytest.raises(ValueError, match="broadcastable"):
        dot_product_attention(q, k, v, mask=np.ones((2, 5, 7), bool))
    with pytest.raises(ValueError, match="boolean"):
        dot_product_attention(q, k, v, mask=np.ones((2, 1, 5, 7), np.float32))
    with pytest.raises(ValueError, match="q_positions has shape"):
        dot_product_attention(q, k, v, q_positions=np.arange(4))
    with pytest.raises(ValueError, match="integer"):
        dot_product_attention(q, k, v, k_positions=np.arange(7.0))


def test_masked_softmax_derivatives_equal_the_softmax_over_allowed_keys(rng):
    """Forward and reverse mode, against float64 finite differences of the softmax formula.

    The derivative rule is written by hand (weights only), so it is checked here against
    the function itself: softmax over the allowed entries of each row, zero elsewhere.
    """
    logits = rng.standard_normal((2, 3, 5, 6))
    allowed = rng.random((2, 1, 5, 6)) < 0.6
    allowed[0, 0, 2] = False  # one row with nothing allowed
    direction = rng.standard_normal(logits.shape)

    def reference(z):
        z = np.where(allowed, z, -np.inf)
        row_max = np.max(z, axis=-1, keepdims=True)
        e = np.where(allowed, np.exp(z - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
        total = e.sum(-1, keepdims=True)
        return e / np.where(total > 0, total, 1.0)

    step = 1e-6
    want_jvp = (reference(logits + step * direction) - reference(logits - step * direction)) / (
        2 * step
    )
    f = lambda z: masked_softmax(z, jnp.asarray(allowed))
    z32, d32 = jnp.asarray(logits, jnp.float32), jnp.asarray(direction, jnp.float32)
    _, got_jvp = jax.jvp(f, (z32,), (d32,))
    np.testing.assert_allclose(got_jvp, want_jvp, atol=2e-5)
    # Reverse mode: <grad of <f(z), c>, d> equals <c, jvp(d)>.
    cotangent = rng.standard_normal(logits.shape)
    grad = jax.grad(lambda z: jnp.sum(f(z) * jnp.asarray(cotangent, jnp.float32)))(z32)
    np.testing.assert_allclose(
        np.sum(np.asarray(grad, np.float64) * direction), np.sum(cotangent * want_jvp), rtol=1e-4
    )
    # Disallowed entries, and so every entry of the row with nothing allowed, get no gradient.
    assert np.all(np.asarray(grad)[~np.broadcast_to(allowed, logits.shape)] == 0.0)
