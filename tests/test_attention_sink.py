"""A learned sink logit per head: one more logit in every row's softmax, with value zero.

The float64 reference appends ``s_h`` to each row of logits, takes the softmax and drops
the sink's column (gpt-oss's ``sinks``). Dense and chunked (where the sink starts the
online softmax) must equal it, in values and gradients (the chunked backward pass returns
the sink's gradient by hand), and the layer option must build the same parameter in
linen and NNX.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import posenc_jax as pj
from posenc_jax.attention import AttentionTemperature, Window, dot_product_attention

B, L, H, G, K = 2, 11, 4, 2, 8


def reference_sink_attention(q, k, v, sink, *, allowed, factor=None):
    """softmax over [tau_i q_i.k_j / sqrt(K) for allowed j, s_h], the sink's weight dropped."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    k, v = (np.repeat(a, H // G, axis=2) for a in (k, v))
    logits = np.einsum("blhk,bshk->bhls", q, k) / np.sqrt(K)
    if factor is not None:
        logits = logits * factor[:, None, :, None]
    logits = np.where(allowed, logits, -np.inf)
    sink = np.broadcast_to(
        np.asarray(sink, np.float64)[None, :, None, None], logits.shape[:3] + (1,)
    )
    full = np.concatenate([logits, sink], axis=-1)
    weights = np.exp(full - full.max(-1, keepdims=True))
    weights = weights / weights.sum(-1, keepdims=True)
    return np.einsum("bhls,bshk->blhk", weights[..., :-1], v)


def _inputs(rng):
    q = jnp.asarray(rng.normal(size=(B, L, H, K)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(B, L, G, K)), jnp.float32) for _ in "kv")
    sink = jnp.asarray([-1.0, 0.0, 1.5, 3.0], jnp.float32)
    return q, k, v, sink


@pytest.mark.parametrize("implementation,block", [("dense", None), ("chunked", 4)])
def test_sink_equals_the_float64_reference(implementation, block, rng):
    """Causal, a sliding window, a padded key and a temperature (which leaves the sink's
    logit as it is); a row with no allowed key puts all its weight on the sink."""
    q, k, v, sink = _inputs(rng)
    positions = np.broadcast_to(np.arange(L), (B, L))
    padding = np.ones((B, L), bool)
    padding[1, 0] = False  # row 1's query 0 then sees no key at all
    temperature = AttentionTemperature("log_length")
    got = dot_product_attention(
        q,
        k,
        v,
        causal=True,
        window=Window(5),
        padding_mask=jnp.asarray(padding),
        temperature=temperature,
        sink_logits=sink,
        implementation=implementation,
        block_size=block,
    )
    distance = positions[:, None, :, None] - positions[:, None, None, :]
    allowed = (distance >= 0) & (distance < 5) & padding[:, None, None, :]
    factor = np.log(np.maximum(allowed[:, 0].sum(-1), 1))
    want = reference_sink_attention(q, k, v, sink, allowed=allowed, factor=factor)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_array_equal(got[1, 0], 0.0)
    # The sink takes weight: without it the outputs differ.
    plain = dot_product_attention(q, k, v, causal=True, implementation=implementation)
    assert np.max(np.abs(plain - got)) > 0.1


def test_chunked_gradients_equal_dense(rng):
    q, k, v, sink = _inputs(rng)
    weights = jnp.asarray(rng.normal(size=(B, L, H, K)), jnp.float32)

    def grads(implementation, block):
        def loss(q, k, v, sink):
            out = dot_product_attention(
                q,
                k,
                v,
                causal=True,
                sink_logits=sink,
                implementation=implementation,
                block_size=block,
            )
            return jnp.sum(out * weights)

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(q, k, v, sink)

    dense = grads("dense", None)
    for block in (4, 16):
        for name, got, want in zip("qkvs", grads("chunked", block), dense, strict=True):
            np.testing.assert_allclose(got, want, atol=3e-5, err_msg=name)
    assert np.min(np.abs(dense[3])) > 1e-3  # every head's sink has a gradient


def test_layer_option_in_linen_and_nnx(rng):
    """``attention_sink=True`` adds ``sink_logits [H]`` starting at 0 (a key of logit 0 and
    value 0); NNX given the linen parameters computes the same."""
    x = jnp.asarray(rng.normal(size=(B, 5, 16)), jnp.float32)
    options = {"num_heads": H, "num_kv_heads": G, "causal": True, "attention_sink": True}
    linen_layer = pj.attention.MultiHeadAttention(**options)
    params = linen_layer.init(jax.random.key(0), x)["params"]
    np.testing.assert_array_equal(params["sink_logits"], np.zeros(H))
    params["sink_logits"] = jnp.asarray([0.5, -0.5, 2.0, 0.0])
    layer = pj.nnx.MultiHeadAttention(in_features=16, rngs=nnx.Rngs(0), **options)
    pj.nnx.load_linen_params(layer, params)
    want = linen_layer.apply({"params": params}, x)
    np.testing.assert_allclose(layer(x), want, rtol=1e-6, atol=1e-6)


def test_transformer_and_layer_spec_options():
    """The model-wide option, overridden by a layer spec: only layer 0 has a sink."""
    cfg = pj.models.TransformerConfig(
        vocab_size=7,
        d_model=8,
        num_layers=2,
        num_heads=2,
        attention_sink=True,
        layers=(pj.models.LayerSpec(), pj.models.LayerSpec(attention_sink=False)),
    )
    params = pj.models.Transformer(cfg).init(jax.random.key(0), jnp.ones((1, 3), jnp.int32))
    decoder = params["params"]["decoder"]
    assert "sink_logits" in decoder["layer_0"]["self_attention"]
    assert "sink_logits" not in decoder["layer_1"]["self_attention"]


def test_the_router_sends_a_sink_to_dense_or_chunked_only():
    q = jnp.ones((1, 4, 2, 8))
    with pytest.raises(ValueError, match="has a sink logit"):
        dot_product_attention(q, q, q, sink_logits=jnp.zeros(2), implementation="jax")
    with pytest.raises(ValueError, match=r"sink_logits has shape \(3,\); expected one logit"):
        dot_product_attention(q, q, q, sink_logits=jnp.zeros(3))
