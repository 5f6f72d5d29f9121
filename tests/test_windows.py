"""Attention windows: sliding and chunked local, every backend against a float64 reference.

A window is part of the attention call and, like causality, read from positions: a query
at p sees keys at ``p - w < q <= p`` (sliding, causal), ``|p - q| < w`` (sliding,
bidirectional) or in its block of w positions (chunked local, Llama 4). The reference
builds the window as a mask from the definition; the dense, chunked and ``jax`` backends
must give its values and gradients, with arange, offset and randomized positions, and a
decoder whose cache is a ring buffer of w slots must give the full pass's logits.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import Window, dot_product_attention
from posenc_jax.attention.ops import attendable_keys
from tests.reference import reference_attention

B, L, H, G, K = 2, 19, 4, 2, 8
WINDOWS = [Window(5), Window(4, "chunked")]


def _window_mask(q_positions, k_positions, window, causal):
    """The window by its definition, [B, 1, L, S] booleans (numpy)."""
    q = np.asarray(q_positions)[:, None, :, None]
    k = np.asarray(k_positions)[:, None, None, :]
    if window.kind == "sliding":
        inside = (q - k < window.size) if causal else (np.abs(q - k) < window.size)
    else:
        inside = q // window.size == k // window.size
    return inside & (k <= q) if causal else inside


def _positions(kind, rng):
    if kind == "arange":
        return np.broadcast_to(np.arange(L), (B, L))
    if kind == "offset":
        return np.broadcast_to(np.arange(L) + 1000, (B, L))
    return np.stack([np.sort(rng.choice(64, L, replace=False)) for _ in range(B)])


def _alibi():
    return pj.encodings.get("alibi").bind({}).bias_fn(num_heads=H, causal=False)


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.kind)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positions", ["arange", "offset", "randomized"])
def test_every_backend_equals_the_reference(rng, window, causal, positions):
    q = jnp.asarray(rng.standard_normal((B, L, H, K)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((B, L, G, K)), jnp.float32) for _ in "kv")
    pos = jnp.asarray(_positions(positions, rng), jnp.int32)
    allowed = _window_mask(pos, pos, window, causal)
    slopes = np.asarray(pj.functional.alibi_slopes(H), np.float64)
    distance = np.abs(np.asarray(pos)[:, None, :, None] - np.asarray(pos)[:, None, None, :])
    bias = -slopes[None, :, None, None] * distance
    want = reference_attention(q, k, v, bias=bias, allowed=allowed)

    alibi = _alibi()

    def attend(implementation, block_size=None, bias_fn=alibi):
        return dot_product_attention(
            q,
            k,
            v,
            bias_fn=bias_fn,
            causal=causal,
            q_positions=pos,
            k_positions=pos,
            window=window,
            implementation=implementation,
            block_size=block_size,
        )

    for implementation, block in (("dense", None), ("chunked", 4), ("chunked", 8)):
        np.testing.assert_allclose(attend(implementation, block), want, atol=2e-5)

    # Gradients of a scalar loss with respect to q, k, v: chunked equals dense.
    def loss(implementation, block):
        def f(q, k, v):
            out = dot_product_attention(
                q, k, v, bias_fn=_alibi(), causal=causal, q_positions=pos, k_positions=pos,
                window=window, implementation=implementation, block_size=block,
            )  # fmt: skip
            return jnp.sum(out * jnp.arange(out.size).reshape(out.shape) / out.size)

        return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

    for dense, chunked in zip(loss("dense", None), loss("chunked", 4), strict=True):
        np.testing.assert_allclose(chunked, dense, atol=2e-5)

    if window.kind == "sliding":  # the fused route takes a sliding window
        plain = reference_attention(q, k, v, allowed=allowed)
        np.testing.assert_allclose(attend("jax", bias_fn=None), plain, atol=2e-5)


def test_chunked_skips_the_tiles_outside_the_window(rng):
    """With w = 4 and tiles of 4 at L = 64, a causal query block needs at most two key
    blocks: the bias is evaluated on those tiles only, not on all 16 x 16."""
    calls = []

    def counting_bias(q_positions, k_positions):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.zeros((H, q_positions.shape[-1], k_positions.shape[-1]), jnp.float32)

    length = 64
    q = jnp.asarray(rng.standard_normal((1, length, H, K)), jnp.float32)
    out = dot_product_attention(q, q, q, bias_fn=counting_bias, causal=True, window=4, block_size=4)
    jax.block_until_ready(out)
    assert len(calls) == 16 + 15  # the diagonal tiles and the ones just before them


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: w.kind)
@pytest.mark.parametrize("causal", [True, False])
def test_attendable_keys_count_the_window(rng, window, causal):
    pos = _positions("randomized", rng)
    padding = rng.random((B, L)) < 0.8
    got = attendable_keys(
        jnp.asarray(pos), jnp.asarray(pos), causal=causal, padding_mask=padding, window=window
    )
    allowed = _window_mask(pos, pos, window, causal)[:, 0] & padding[:, None, :]
    np.testing.assert_array_equal(got, allowed.sum(-1))


@pytest.mark.parametrize("window", [Window(3), Window(4, "chunked")], ids=lambda w: w.kind)
@pytest.mark.parametrize("name", ["rope", "alibi"])
def test_ring_buffer_decoding_equals_the_full_pass(rng, window, name):
    """Decoding one token at a time through a cache of w slots gives the full pass's
    logits, for a windowed layer and a full one in the same model."""
    num_tokens = 11
    layer = pj.attention.MultiHeadAttention(
        num_heads=2, causal=True, encoding=pj.encodings.get(name), window=window
    )
    x = jnp.asarray(rng.standard_normal((2, num_tokens, 8)), jnp.float32)
    params = layer.init(jax.random.key(0), x)["params"]
    full = layer.apply({"params": params}, x)

    decoding = pj.attention.MultiHeadAttention(
        num_heads=2, causal=True, encoding=pj.encodings.get(name), window=window, decode=True
    )
    cache = decoding.init(jax.random.key(0), x)["cache"]
    assert cache["cached_key"].shape[1] == window.size
    steps = []
    for t in range(num_tokens):
        out, variables = decoding.apply(
            {"params": params, "cache": cache},
            x[:, t : t + 1],
            q_positions=jnp.full((2, 1), t),
            mutable=["cache"],
        )
        cache = variables["cache"]
        steps.append(out)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5)


def test_bad_windows_are_named():
    with pytest.raises(ValueError, match="window size must be a positive integer"):
        Window(0)
    with pytest.raises(ValueError, match="window kind='global'"):
        Window(4, "global")
    q = jnp.ones((1, 4, 2, 4))
    with pytest.raises(ValueError, match="a chunked local window"):
        dot_product_attention(q, q, q, window=Window(2, "chunked"), implementation="jax")
