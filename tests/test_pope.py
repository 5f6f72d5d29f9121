"""PoPE against a float64 reference of its attention score, and keys wider than values.

The reference is the paper's score written out: for query head ``h`` at ``t`` and a key
at ``s``, ``sum_c softplus(q_c) softplus(k_c) cos((t - s) theta_c - delta_hc) / sqrt(K)``
with ``theta_c = base^(-c/K)`` and ``delta`` clamped to ``[-2 pi, 0]``, then a causal
softmax and the values, all in float64.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import posenc_jax as pj
from posenc_jax.attention import dot_product_attention

K = 6


def _softplus(x):
    return np.logaddexp(0.0, x)


def _reference(q, k, v, q_positions, k_positions, delta, base=10000.0):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    batch, length, heads, features = q.shape
    groups = k.shape[2]
    theta = base ** (-np.arange(features) / features)
    delta = np.clip(np.asarray(delta, np.float64), -2 * math.pi, 0.0)
    out = np.zeros((batch, length, heads, v.shape[-1]))
    for b in range(batch):
        for h in range(heads):
            g = h // (heads // groups)
            logits = np.full((length, k.shape[1]), -np.inf)
            for i in range(length):
                for j in range(k.shape[1]):
                    if k_positions[b, j] > q_positions[b, i]:
                        continue
                    gap = q_positions[b, i] - k_positions[b, j]
                    terms = _softplus(q[b, i, h]) * _softplus(k[b, j, g])
                    logits[i, j] = np.sum(terms * np.cos(gap * theta - delta[h])) / math.sqrt(K)
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
            out[b, :, h] = weights @ v[b, :, g]
    return out


def _inputs(rng, heads=4, groups=2, length=5):
    q = jnp.asarray(rng.normal(size=(2, length, heads, K)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, length, groups, K)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, length, groups, K)), jnp.float32)
    return q, k, v


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_attention_equals_the_float64_reference(rng, implementation):
    """Grouped key heads, offset positions, offsets inside and outside [-2 pi, 0]."""
    q, k, v = _inputs(rng)
    positions = jnp.asarray([[0, 1, 2, 3, 4], [3, 8, 9, 20, 21]], jnp.int32)
    pope = pj.encodings.get("pope")
    delta = np.asarray(rng.uniform(-9.0, 2.0, size=(4, K)), np.float32)
    variables = {"params": {"phase_offset": jnp.asarray(delta)}}
    q_out, k_out = pope.apply(variables, "rotate", q, k, positions, positions)
    assert q_out.shape == (2, 5, 4, 2 * K) and k_out.shape == (2, 5, 2, 2 * K)
    block = {"block_size": 2} if implementation == "chunked" else {}
    out = dot_product_attention(
        q_out,
        k_out,
        v,
        causal=True,
        q_positions=positions,
        k_positions=positions,
        implementation=implementation,
        **block,
    )
    want = _reference(q, k, v, np.asarray(positions), np.asarray(positions), delta)
    np.testing.assert_allclose(out, want, atol=2e-5)


def test_logits_depend_on_relative_positions_only(rng):
    q, k, _ = _inputs(rng, heads=2, groups=2)
    pope = pj.encodings.get("pope", uniform_offset_init=True)
    positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
    variables = pope.init(jax.random.key(0), "rotate", q, k, positions, positions)
    offsets = variables["params"]["phase_offset"]
    assert float(offsets.min()) >= -2 * math.pi and float(offsets.max()) <= 0.0

    def logits(shift):
        at = positions + shift
        q_out, k_out = pope.apply(variables, "rotate", q, k, at, at)
        return np.einsum("blhk,bshk->bhls", q_out, k_out)

    np.testing.assert_allclose(logits(0), logits(1000), atol=1e-3)


def test_chunked_gradients_equal_dense_for_keys_wider_than_values(rng):
    q, k, v = _inputs(rng, length=7)
    q, k = jnp.concatenate([q, q], -1), jnp.concatenate([k, -k], -1)  # 2K-wide, as PoPE's

    def loss(implementation, q, k, v):
        extra = {"block_size": 3} if implementation == "chunked" else {}
        out = dot_product_attention(q, k, v, causal=True, implementation=implementation, **extra)
        return jnp.sum(jnp.sin(out))

    dense = jax.grad(lambda *a: loss("dense", *a), argnums=(0, 1, 2))(q, k, v)
    chunked = jax.grad(lambda *a: loss("chunked", *a), argnums=(0, 1, 2))(q, k, v)
    for want, got in zip(dense, chunked, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-5)
    with pytest.raises(ValueError, match="values of another width than the keys"):
        dot_product_attention(q, k, v, implementation="jax")


def test_nnx_decoding_with_wider_cached_keys_equals_the_full_pass():
    """The NNX cache sizes its keys by the encoding's rotated width (2K)."""
    cfg = pj.models.TransformerConfig(
        vocab_size=7, d_model=8, num_layers=1, num_heads=2, encoding=pj.encodings.get("pope")
    )
    model = pj.nnx.Transformer(dataclasses.replace(cfg, decode=True), rngs=nnx.Rngs(0))
    full = pj.nnx.Transformer(cfg, rngs=nnx.Rngs(0))
    model.init_cache(2, 5)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 7, (2, 5)), jnp.int32)
    steps = [model(tokens[:, t : t + 1], jnp.full((2, 1), t, jnp.int32)) for t in range(5)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full(tokens), atol=1e-5)
    assert model.decoder.layer_0.self_attention.cached_key[...].shape[-1] == 8  # 2K, K = 4


def test_sink_logits_and_stick_breaking_take_keys_wider_than_values(rng):
    """With PoPE's keys twice as wide as the values, a sink logit (the chunked online
    softmax starts from it) and stick-breaking weights (the chunked scans carry weighted
    values) give their float64 references, chunked equal to dense in values and gradients,
    and the fused route names every reason it refuses."""
    from tests.test_attention_sink import reference_sink_attention
    from tests.test_stick_breaking import reference_stick_breaking

    length = 7
    q = jnp.asarray(rng.normal(size=(2, length, 4, 8)), jnp.float32)  # 2K = 8: H 4, G 2
    k = jnp.asarray(rng.normal(size=(2, length, 2, 8)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(2, length, 2, 4)), jnp.float32)
    target = jnp.asarray(rng.normal(size=(2, length, 4, 4)), jnp.float32)
    sink = jnp.asarray([-1.0, 0.0, 1.5, 3.0], jnp.float32)
    causal = np.tril(np.ones((length, length), bool))[None, None]
    cases = {
        "sink": (
            {"sink_logits": sink},
            reference_sink_attention(q, k, v, sink, allowed=causal),
        ),
        "stick_breaking": (
            {"stick_breaking": pj.attention.StickBreaking()},
            reference_stick_breaking(q, k, v),
        ),
    }
    for name, (options, want) in cases.items():

        def run(implementation, block, options=options):
            def loss(q, k, v):
                out = dot_product_attention(
                    q,
                    k,
                    v,
                    causal=True,
                    implementation=implementation,
                    block_size=block,
                    **options,
                )
                return jnp.sum(out * target), out

            return jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)

        (_, dense_out), dense_grads = run("dense", None)
        (_, chunked_out), chunked_grads = run("chunked", 3)
        np.testing.assert_allclose(dense_out, want, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(chunked_out, want, atol=2e-5, err_msg=name)
        for got, expected in zip(chunked_grads, dense_grads, strict=True):
            np.testing.assert_allclose(got, expected, atol=3e-5, err_msg=name)
    with pytest.raises(ValueError, match="values of another width than the keys and a sink"):
        dot_product_attention(q, k, v, causal=True, sink_logits=sink, implementation="jax")
