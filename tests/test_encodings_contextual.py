"""Shaw, Transformer-XL and CoPE against float64 numpy references written from the papers.

Each reference builds the per-pair quantity the paper writes down (the clipped relative
vectors ``a_ij``, the sinusoid ``r_{i-j}`` of every distance, the gate sums
``sum_{t=j}^{i} g_it`` and the interpolated embedding vectors), none of the shortcuts the
package takes (gathers of ``q.a`` products, the angle-difference split, a reversed cumsum,
interpolated scalars).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import MultiHeadAttention, dot_product_attention
from tests.reference import (
    reference_attention,
    reference_cope_logits,
    reference_shaw_logits,
    reference_shaw_values,
    reference_transformer_xl_scores,
)

BATCH, LEN, HEADS, KV_HEADS, DIM = 2, 9, 4, 2, 8


def _qkv(rng, q_len=LEN, k_len=LEN, kv_heads=KV_HEADS):
    q = rng.standard_normal((BATCH, q_len, HEADS, DIM)).astype(np.float32)
    k = rng.standard_normal((BATCH, k_len, kv_heads, DIM)).astype(np.float32)
    v = rng.standard_normal((BATCH, k_len, kv_heads, DIM)).astype(np.float32)
    return q, k, v


def _contextual(encoding, params, causal):
    return encoding.apply(
        {"params": params},
        method=lambda m: m.contextual(num_heads=HEADS, head_dim=DIM, causal=causal),
    )


def _per_head(x, heads=HEADS):
    x = np.asarray(x, np.float64)
    return np.repeat(x, heads // x.shape[2], axis=2)


def _softmax_rows(logits, allowed):
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    weights = np.where(allowed, np.exp(logits - np.where(np.isfinite(row_max), row_max, 0)), 0)
    total = weights.sum(-1, keepdims=True)
    return weights / np.where(total > 0, total, 1.0)


# --- Shaw et al. 2018 -------------------------------------------------------------------


def _reference_shaw(q, k, v, key_table, value_table, q_positions, k_positions, clip, allowed):
    """Eq. 3 and 5 of Shaw et al.: explicit relative vectors a_ij for every pair."""
    logits = reference_shaw_logits(q, k, key_table, q_positions, k_positions, clip)
    weights = _softmax_rows(logits, np.broadcast_to(allowed, logits.shape))
    out = np.einsum("bhls,bshk->blhk", weights, _per_head(v))
    return logits, out + reference_shaw_values(weights, value_table, q_positions, k_positions, clip)


def _shaw_params(rng, clip):
    return {
        "relative_keys": jnp.asarray(rng.standard_normal((2 * clip + 1, DIM)), jnp.float32),
        "relative_values": jnp.asarray(rng.standard_normal((2 * clip + 1, DIM)), jnp.float32),
    }


@pytest.mark.parametrize("causal", [True, False])
def test_shaw_logits_and_outputs_match_reference(rng, causal):
    clip = 3
    params = _shaw_params(rng, clip)
    contextual = _contextual(pj.encodings.get("shaw", max_distance=clip), params, causal)
    q, k, v = _qkv(rng)
    positions = np.sort(rng.choice(30, size=(BATCH, LEN), replace=False), axis=-1)
    mask = rng.random((BATCH, 1, LEN, LEN)) > 0.2
    mask[0, :, 4] = False  # an empty row: zero output, including the value term
    allowed = (
        mask & (positions[:, None, None, :] <= positions[:, None, :, None]) if causal else mask
    )
    want_logits, want_out = _reference_shaw(
        q,
        k,
        v,
        params["relative_keys"],
        params["relative_values"],
        positions,
        positions,
        clip,
        allowed,
    )

    scale = DIM**-0.5
    content = jnp.einsum("blhk,bshk->bhls", q, _per_head(k).astype(np.float32)) * scale
    got_logits = contextual.logits(
        content, q, _per_head(k).astype(np.float32), positions, positions, None, scale
    )
    np.testing.assert_allclose(got_logits, want_logits, atol=1e-5)

    got_out = jax.jit(
        lambda q, k, v: dot_product_attention(
            q,
            k,
            v,
            mask=mask,
            causal=causal,
            q_positions=positions,
            k_positions=positions,
            contextual=contextual,
        )
    )(q, k, v)
    np.testing.assert_allclose(got_out, want_out, atol=1e-5)
    np.testing.assert_array_equal(got_out[0, 4], 0.0)


def test_shaw_distances_beyond_clip_share_the_edge_vectors(rng):
    """Keys further than k away on the same side are indistinguishable (Shaw et al. Eq. 6)."""
    clip = 2
    params = _shaw_params(rng, clip)
    contextual = _contextual(pj.encodings.get("shaw", max_distance=clip), params, False)
    q = rng.standard_normal((1, 1, HEADS, DIM)).astype(np.float32)
    k_positions = np.arange(20)[None]
    zeros = jnp.zeros((1, HEADS, 1, 20), jnp.float32)
    relative = contextual.logits(zeros, q, None, np.array([[10]]), k_positions, None, 1.0)
    relative = np.asarray(relative[0, :, 0])
    np.testing.assert_allclose(relative[:, :9], relative[:, :1].repeat(9, 1), rtol=1e-6)
    np.testing.assert_allclose(relative[:, 12:], relative[:, 12:13].repeat(8, 1), rtol=1e-6)
    assert len(np.unique(relative[0, 8:13].round(5))) == 5


# --- Transformer-XL (Dai et al. 2019) -----------------------------------------------------


@pytest.mark.parametrize("offset", [0, 10**6])
@pytest.mark.parametrize("relative_dim", [None, 12])
def test_transformer_xl_scores_match_direct_formula(rng, relative_dim, offset):
    encoding = pj.encodings.get("transformer_xl", relative_dim=relative_dim)
    rel = relative_dim or HEADS * DIM
    params = {
        "content_bias": jnp.asarray(rng.standard_normal((HEADS, DIM)), jnp.float32),
        "position_bias": jnp.asarray(rng.standard_normal((HEADS, DIM)), jnp.float32),
        "relative_kernel": jnp.asarray(rng.standard_normal((rel, HEADS, DIM)) * 0.3, jnp.float32),
    }
    contextual = _contextual(encoding, params, True)
    q, k, v = _qkv(rng, q_len=5, k_len=LEN)
    # Randomized, non-contiguous positions; queries are the last keys (a decoding cache).
    # An offset of 10^6 (a long document's later window) leaves the distances, and so the
    # scores, unchanged; a float32 product of position and frequency is off by 0.03 there.
    k_positions = offset + np.sort(rng.choice(200, size=(BATCH, LEN), replace=False), axis=-1)
    q_positions = k_positions[:, -5:]
    want = reference_transformer_xl_scores(
        q,
        k,
        params["content_bias"],
        params["position_bias"],
        params["relative_kernel"],
        q_positions,
        k_positions,
    )
    scale = DIM**-0.5
    k_heads = _per_head(k).astype(np.float32)
    content = jnp.einsum("blhk,bshk->bhls", q, k_heads) * scale
    got = contextual.logits(content, q, k_heads, q_positions, k_positions, None, scale)
    np.testing.assert_allclose(got, want, atol=2e-5)

    allowed = k_positions[:, None, None, :] <= q_positions[:, None, :, None]
    content64 = np.einsum("blhk,bshk->bhls", q.astype(np.float64), _per_head(k)) * scale
    want_out = reference_attention(q, k, v, bias=want - content64, allowed=allowed)
    got_out = jax.jit(
        lambda q, k, v: dot_product_attention(
            q,
            k,
            v,
            causal=True,
            q_positions=q_positions,
            k_positions=k_positions,
            contextual=contextual,
        )
    )(q, k, v)
    np.testing.assert_allclose(got_out, want_out, atol=1e-5)


def test_transformer_xl_odd_relative_dim_is_an_error():
    attention = MultiHeadAttention(
        num_heads=HEADS, encoding=pj.encodings.get("transformer_xl", relative_dim=7)
    )
    with pytest.raises(ValueError, match="relative_dim must be a positive even number, got 7"):
        jax.eval_shape(attention.init, jax.random.key(0), jnp.zeros((1, 3, HEADS * DIM)))


# --- CoPE (Golovneva et al. 2024) ---------------------------------------------------------


def _cope_params(rng, num_positions):
    return {
        "position_embeddings": jnp.asarray(rng.standard_normal((num_positions, DIM)), jnp.float32)
    }


@pytest.mark.parametrize("num_positions", [4, 16])
def test_cope_logits_and_outputs_match_reference(rng, num_positions):
    """npos = 4 clips the counts of the longer rows; npos = 16 never clips."""
    encoding = pj.encodings.get("cope", num_positions=num_positions)
    params = _cope_params(rng, num_positions)
    contextual = _contextual(encoding, params, True)
    q, k, v = _qkv(rng)
    causal = np.tril(np.ones((LEN, LEN), bool))[None, None]
    want = reference_cope_logits(q, k, params["position_embeddings"], num_positions, causal)

    scale = DIM**-0.5
    k_heads = _per_head(k).astype(np.float32)
    content = jnp.einsum("blhk,bshk->bhls", q, k_heads) * scale
    positions = np.broadcast_to(np.arange(LEN), (BATCH, LEN))
    got = contextual.logits(content, q, k_heads, positions, positions, causal, scale)
    np.testing.assert_allclose(np.where(causal, got, 0.0), np.where(causal, want, 0.0), atol=1e-5)

    got_out = jax.jit(
        lambda q, k, v: dot_product_attention(q, k, v, causal=True, contextual=contextual)
    )(q, k, v)
    want_out = np.einsum(
        "bhls,bshk->blhk", _softmax_rows(want, np.broadcast_to(causal, want.shape)), _per_head(v)
    )
    np.testing.assert_allclose(got_out, want_out, atol=1e-5)


def test_cope_gradient_matches_finite_differences_of_reference(rng):
    """Gradients reach the keys through the gates (the interpolation weight), as in the paper."""
    params = _cope_params(rng, 16)
    contextual = _contextual(pj.encodings.get("cope"), params, True)
    q, k, _ = _qkv(rng, kv_heads=HEADS)
    causal = np.tril(np.ones((LEN, LEN), bool))[None, None]
    weights = rng.standard_normal((BATCH, HEADS, LEN, LEN)) * causal
    scale = DIM**-0.5
    positions = np.broadcast_to(np.arange(LEN), (BATCH, LEN))

    def loss(k):
        content = jnp.einsum("blhk,bshk->bhls", q, k) * scale
        logits = contextual.logits(content, q, k, positions, positions, causal, scale)
        return jnp.sum(logits * weights)

    grad_k = jax.grad(loss)(k)
    embeddings = params["position_embeddings"]
    step = 1e-6
    for index in [(0, 1, 0, 3), (1, 5, 2, 0), (0, 8, 3, 7)]:
        plus, minus = k.astype(np.float64), k.astype(np.float64)
        plus[index] += step
        minus[index] -= step
        numeric = (
            np.sum(reference_cope_logits(q, plus, embeddings, 16, causal) * weights)
            - np.sum(reference_cope_logits(q, minus, embeddings, 16, causal) * weights)
        ) / (2 * step)
        np.testing.assert_allclose(grad_k[index], numeric, rtol=1e-3, atol=1e-4)


def test_cope_is_causal_by_gradient(rng):
    """The output at position t does not depend on inputs after t."""
    attention = MultiHeadAttention(num_heads=HEADS, causal=True, encoding=pj.encodings.get("cope"))
    x = jnp.asarray(rng.standard_normal((1, LEN, HEADS * DIM)), jnp.float32)
    params = jax.jit(attention.init)(jax.random.key(0), x)
    params["params"]["position_encoding"] = _cope_params(rng, 16)
    t = 4
    jacobian = jax.jit(jax.jacobian(lambda x: attention.apply(params, x)[0, t]))(x)  # [D, 1, L, D]
    after = np.abs(np.asarray(jacobian)[:, 0, t + 1 :]).max()
    before = np.abs(np.asarray(jacobian)[:, 0, : t + 1]).max()
    assert after == 0.0
    assert before > 0.0


def test_cope_requires_causal_attention():
    attention = MultiHeadAttention(num_heads=HEADS, encoding=pj.encodings.get("cope"))
    with pytest.raises(ValueError, match="causal"):
        jax.eval_shape(attention.init, jax.random.key(0), jnp.zeros((1, 3, HEADS * DIM)))


def test_a_causal_cope_term_refuses_bidirectional_attention(rng):
    """Called directly with causal=False, CoPE's gates would count the later keys too."""
    contextual = _contextual(pj.encodings.get("cope"), _cope_params(rng, 16), True)
    q, k, v = _qkv(rng)
    with pytest.raises(ValueError, match="built for causal=True attention, but this call"):
        dot_product_attention(q, k, v, causal=False, contextual=contextual)


# --- The contextual hook in attention -----------------------------------------------------


@pytest.mark.parametrize("name", ["shaw", "transformer_xl", "cope"])
def test_contextual_encodings_need_dense_and_refuse_other_paths(name):
    encoding = pj.encodings.get(name)
    assert encoding.needs_dense
    x = jnp.zeros((1, 5, HEADS * DIM))
    for request in ({"block_size": 4}, {"implementation": "chunked"}, {"implementation": "jax"}):
        attention = MultiHeadAttention(num_heads=HEADS, causal=True, encoding=encoding, **request)
        # The router's refusals: tiles cannot hold the map, the fused route takes no term.
        with pytest.raises(ValueError, match="contextual term needs the full|has a contextual"):
            jax.eval_shape(attention.init, jax.random.key(0), x)


@pytest.mark.parametrize("name", ["shaw", "transformer_xl", "cope"])
def test_every_layer_has_its_own_parameters_and_grouped_heads_work(rng, name):
    config = pj.models.TransformerConfig(
        vocab_size=7,
        d_model=HEADS * DIM,
        num_layers=2,
        num_heads=HEADS,
        num_kv_heads=KV_HEADS,
        encoding=pj.encodings.get(name),
    )
    tokens = jnp.asarray(rng.integers(0, 7, (1, 6)), jnp.int32)
    init = jax.jit(pj.models.Transformer(config).init_with_output)
    logits, params = init(jax.random.key(0), tokens)
    for layer in ("layer_0", "layer_1"):
        assert "position_encoding" in params["params"]["decoder"][layer]["self_attention"]
    assert logits.shape == (1, 6, 7) and np.all(np.isfinite(logits))


@pytest.mark.parametrize(
    "name,field,value",
    [("shaw", "max_distance", 2.5), ("shaw", "max_distance", 0), ("cope", "num_positions", 2.5)],
)
def test_table_sizes_must_be_positive_integers(name, field, value):
    attention = MultiHeadAttention(
        num_heads=HEADS, causal=True, encoding=pj.encodings.get(name, **{field: value})
    )
    x = jnp.zeros((1, 3, HEADS * DIM))
    with pytest.raises(ValueError, match=f"{field} must be a positive integer, got {value}"):
        attention.init(jax.random.key(0), x)
