"""A per-token separable bias ``b_ij = u_i - w_j`` in every backend, values and gradients.

The shape of the Forgetting Transformer's term ``c_i - c_j`` (Lin et al., ICLR 2025): the
chunked backend cuts u and w into tiles with the queries and keys and returns their
gradients from its hand-written backward pass (row sums of the logit gradient for u,
minus its column sums for w); the dense backend differentiates the full map. Both must
equal a float64 reference written from the definition, and each other's gradients.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.attention import Window, dot_product_attention
from tests.reference import reference_attention

B, L, H, G, K = 2, 13, 4, 2, 8


def _inputs(rng):
    q = jnp.asarray(rng.standard_normal((B, L, H, K)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((B, L, G, K)), jnp.float32) for _ in "kv")
    # A forget gate's cumulative log: c_t = sum_{s <= t} log sigmoid(a_s), decreasing.
    gates = jax.nn.log_sigmoid(jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32) + 2)
    c = jnp.cumsum(gates, axis=-1)
    return q, k, v, c


@pytest.mark.parametrize("window", [None, Window(4)])
@pytest.mark.parametrize("causal", [True, False])
def test_separable_bias_equals_the_reference(rng, causal, window):
    q, k, v, c = _inputs(rng)
    u, w = c, c + 0.25 * jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32)
    bias = np.asarray(u, np.float64)[..., :, None] - np.asarray(w, np.float64)[..., None, :]
    pos = np.arange(L)
    allowed = np.ones((1, 1, L, L), bool)
    if causal:
        allowed &= pos[None, :] <= pos[:, None]
    if window is not None:
        distance = pos[:, None] - pos[None, :]
        allowed &= (distance < window.size) if causal else (np.abs(distance) < window.size)
    want = reference_attention(q, k, v, bias=bias, allowed=allowed)
    for implementation, block in (("dense", None), ("chunked", 4), ("chunked", 16)):
        got = dot_product_attention(
            q,
            k,
            v,
            separable_bias=(u, w),
            causal=causal,
            window=window,
            implementation=implementation,
            block_size=block,
        )
        np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_chunked_gradients_of_u_and_w_equal_dense(rng, causal):
    q, k, v, c = _inputs(rng)
    u, w = c, c[:, :, ::-1]
    weights = jnp.asarray(rng.standard_normal((B, L, H, K)), jnp.float32)

    def loss(implementation, block):
        def f(q, k, v, u, w):
            out = dot_product_attention(
                q,
                k,
                v,
                separable_bias=(u, w),
                causal=causal,
                implementation=implementation,
                block_size=block,
            )
            return jnp.sum(out * weights)

        return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3, 4)))(q, k, v, u, w)

    dense = loss("dense", None)
    for block in (4, 8):
        for name, got, want in zip("qkvuw", loss("chunked", block), dense, strict=True):
            np.testing.assert_allclose(got, want, atol=3e-5, err_msg=name)
    # u_i is constant along a query's row, which a softmax does not see: its gradient is 0.
    np.testing.assert_allclose(dense[3], 0.0, atol=1e-5)


def test_separable_bias_shapes_are_checked():
    q = jnp.ones((1, 4, 2, 8))
    with pytest.raises(ValueError, match=r"expected u \[B, H, L\] = \[1, 2, 4\]"):
        dot_product_attention(q, q, q, separable_bias=(jnp.ones((1, 4)), jnp.ones((1, 2, 4))))
    with pytest.raises(ValueError, match="has a position bias"):
        dot_product_attention(
            q, q, q, separable_bias=(jnp.ones((1, 2, 4)),) * 2, implementation="jax"
        )


def test_a_contextual_term_sees_the_content_logits_not_the_separable_bias(rng):
    """CoPE's gates are sigmoid(q.k / sqrt(d)) (Golovneva et al. 2024, Eq. 3), as the
    contextual hook's contract says (it receives the content logits plus the encoding's
    own bias): a separable bias added to the same logits is not content. It was added
    before the contextual term, so it moved CoPE's gates and counts."""
    import posenc_jax as pj
    from tests.reference import reference_cope_logits, reference_weights, repeat_kv_heads

    q, k, v, c = _inputs(rng)
    u, w = 2.0 * c, 2.0 * c + jnp.asarray(rng.standard_normal((B, H, L)), jnp.float32)
    cope = pj.encodings.get("cope", num_positions=4)
    embeddings = jnp.asarray(rng.standard_normal((4, K)), jnp.float32)
    contextual = cope.apply(
        {"params": {"position_embeddings": embeddings}},
        method=lambda m: m.contextual(num_heads=H, head_dim=K, causal=True),
    )
    got = dot_product_attention(q, k, v, causal=True, contextual=contextual, separable_bias=(u, w))
    causal = np.tril(np.ones((L, L), bool))[None, None]
    logits = reference_cope_logits(q, k, embeddings, 4, causal)
    content = np.einsum("blhk,bshk->bhls", np.asarray(q, np.float64), repeat_kv_heads(k, H))
    separable = np.asarray(u, np.float64)[..., :, None] - np.asarray(w, np.float64)[..., None, :]
    weights = reference_weights(q, k, bias=logits - content * K**-0.5 + separable, allowed=causal)
    want = np.einsum("bhls,bshk->blhk", weights, repeat_kv_heads(v, H))
    np.testing.assert_allclose(got, want, atol=2e-5)
