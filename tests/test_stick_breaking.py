"""Stick-breaking attention: A_ij = sigmoid(z_ij) prod_{j < l < i} (1 - sigmoid(z_il)).

The float64 reference is the paper's product, written as loops over keys; the package
computes it in log space over keys ordered by position. Checked: values (with padding,
GQA, the query's own key in or out), chunked == dense (values and the hand-written
backward pass), independence of the keys' order in the call (a ring-buffer cache stores
them out of order), decoding with a cache, causality by perturbation, gradients, the
attention kind in both skins, and the refusals.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import posenc_jax as pj
from posenc_jax.attention import StickBreaking, dot_product_attention

B, L, H, G, K = 2, 9, 4, 2, 8


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def reference_stick_breaking(q, k, v, *, attend_current=False, valid=None):
    """Loops over the paper's product, float64; keys in sequence order, ``valid`` [B, S]
    marks real keys (padding neither takes nor breaks the stick)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    k, v = (np.repeat(a, q.shape[2] // a.shape[2], axis=2) for a in (k, v))
    z = np.einsum("blhk,bshk->bhls", q, k) / np.sqrt(q.shape[-1])
    batch, heads, length, keys = z.shape
    valid = np.ones((batch, keys), bool) if valid is None else valid
    weights = np.zeros_like(z)
    for b in range(batch):
        for h in range(heads):
            for i in range(length):
                last = i if attend_current else i - 1
                for j in range(last + 1):
                    if not valid[b, j]:
                        continue
                    stick = _sigmoid(z[b, h, i, j])
                    for m in range(j + 1, last + 1):
                        if valid[b, m]:
                            stick *= 1.0 - _sigmoid(z[b, h, i, m])
                    weights[b, h, i, j] = stick
    return np.einsum("bhls,bshk->blhk", weights, v)


def _qkv(rng, scale=1.5):
    q = jnp.asarray(scale * rng.normal(size=(B, L, H, K)), jnp.float32)
    k, v = (jnp.asarray(scale * rng.normal(size=(B, L, G, K)), jnp.float32) for _ in "kv")
    return q, k, v


@pytest.mark.parametrize("attend_current", [False, True])
def test_equals_the_papers_product(attend_current, rng):
    q, k, v = _qkv(rng)
    valid = np.ones((B, L), bool)
    valid[1, [2, 5]] = False  # padding in the middle of row 1
    got = dot_product_attention(
        q,
        k,
        v,
        causal=True,
        padding_mask=jnp.asarray(valid),
        stick_breaking=StickBreaking(attend_current=attend_current),
    )
    want = reference_stick_breaking(q, k, v, attend_current=attend_current, valid=valid)
    np.testing.assert_allclose(got, want, atol=1e-5)
    if not attend_current:
        np.testing.assert_array_equal(got[:, 0], 0.0)  # the first token has no earlier key


def test_chunked_equals_dense_values_and_gradients(rng):
    """The chunked backend scans each query block's key blocks from the last backwards,
    carrying the stick broken so far (and, backwards, the sum of A g): the dense values and
    gradients, with padding, a window, a temperature and a separable bias; and with the
    keys' slots shuffled, which the chunked backend puts back in position order."""
    q, k, v = _qkv(rng)
    length = q.shape[1]
    valid = np.ones((B, length), bool)
    valid[1, [0, 4]] = False
    u = jnp.asarray(rng.normal(size=(B, H, length)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(B, H, length)), jnp.float32)
    order = np.asarray(rng.permutation(length))
    positions = jnp.broadcast_to(jnp.arange(length), (B, length))
    target = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def loss(implementation, block, attend_current, shuffled):
        def f(q, k, v, u, w):
            keys = order if shuffled else np.arange(length)
            out = dot_product_attention(
                q,
                k[:, keys],
                v[:, keys],
                causal=True,
                q_positions=positions,
                k_positions=positions[:, keys],
                padding_mask=jnp.asarray(valid[:, keys]),
                window=6,
                temperature=pj.attention.AttentionTemperature("log_length"),
                separable_bias=(u, w[:, :, keys]),
                stick_breaking=StickBreaking(attend_current=attend_current),
                implementation=implementation,
                block_size=block,
            )
            return jnp.sum(out * target), out

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4), has_aux=True))(q, k, v, u, w)

    for attend_current in (False, True):
        (_, want), dense = loss("dense", None, attend_current, False)
        for block, shuffled in ((2, False), (4, True)):
            (_, got), grads = loss("chunked", block, attend_current, shuffled)
            np.testing.assert_allclose(got, want, atol=1e-5)
            # Gradients with respect to the unshuffled inputs (the shuffle is inside f).
            for name, got_grad, want_grad in zip("qkvuw", grads, dense, strict=True):
                np.testing.assert_allclose(got_grad, want_grad, atol=3e-5, err_msg=name)


def test_keys_are_visited_by_position_not_by_slot(rng):
    """Shuffling the keys' slots (with their values and positions) changes nothing: the
    stick is broken from the query's position backwards, as in a ring-buffer cache."""
    q, k, v = _qkv(rng)
    positions = jnp.broadcast_to(jnp.arange(L), (B, L))
    order = np.asarray(rng.permutation(L))
    rule = StickBreaking()
    want = dot_product_attention(q, k, v, causal=True, stick_breaking=rule)
    got = dot_product_attention(
        q,
        k[:, order],
        v[:, order],
        causal=True,
        q_positions=positions,
        k_positions=positions[:, order],
        stick_breaking=rule,
    )
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_gradients_match_central_differences(rng):
    """The log-space weights differentiate to the paper's product's derivatives."""
    q, k, v = _qkv(rng, scale=1.0)
    w = rng.normal(size=(B, L, H, K))

    def loss(q):
        out = dot_product_attention(q, k, v, causal=True, stick_breaking=StickBreaking())
        return jnp.sum(out * w)

    grad = np.asarray(jax.grad(loss)(q))
    step = 1e-4
    for index in [(0, 3, 1, 2), (1, 8, 3, 0), (1, 5, 0, 7)]:
        delta = np.zeros(q.shape)
        delta[index] = step
        plus = np.sum(reference_stick_breaking(np.asarray(q) + delta, k, v) * w)
        minus = np.sum(reference_stick_breaking(np.asarray(q) - delta, k, v) * w)
        np.testing.assert_allclose(grad[index], (plus - minus) / (2 * step), rtol=1e-3, atol=1e-4)


def _config(**overrides):
    fields = {
        "vocab_size": 7,
        "d_model": 16,
        "num_layers": 2,
        "num_heads": 2,
        "mlp_dim": 16,
        "attention": "stick_breaking",
    }
    return pj.models.TransformerConfig(**{**fields, **overrides})


def test_the_attention_kind_decodes_and_runs_in_nnx(rng):
    """A decoder of stick-breaking layers (the second with a ring-buffer window): decoding
    one token per call gives the full pass's logits, and NNX gives linen's."""
    layers = (pj.models.LayerSpec(), pj.models.LayerSpec(window=3))
    cfg = _config(layers=layers)
    tokens = jnp.asarray(rng.integers(0, 7, (B, L)), jnp.int32)
    model = pj.models.Transformer(cfg)
    params = model.init(jax.random.key(0), tokens)["params"]
    full = model.apply({"params": params}, tokens)
    decoding = pj.models.Transformer(dataclasses.replace(cfg, decode=True))
    cache = decoding.init(jax.random.key(0), tokens)["cache"]
    pieces = []
    for start, stop in [(0, 4)] + [(t, t + 1) for t in range(4, L)]:
        positions = jnp.broadcast_to(jnp.arange(start, stop), (B, stop - start))
        logits, variables = decoding.apply(
            {"params": params, "cache": cache},
            tokens[:, start:stop],
            positions,
            mutable=["cache"],
        )
        cache = variables["cache"]
        pieces.append(logits)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=2e-5)
    nnx_model = pj.nnx.load_linen_params(pj.nnx.Transformer(cfg, rngs=nnx.Rngs(0)), params)
    np.testing.assert_allclose(nnx_model(tokens), full, rtol=1e-6, atol=1e-6)
    softmax = pj.models.Transformer(dataclasses.replace(cfg, attention="multi_head"))
    assert np.max(np.abs(softmax.apply({"params": params}, tokens) - full)) > 1e-2


def test_causality_by_perturbation(rng):
    """Changing token t changes no logit before t and some from t on."""
    cfg = _config()
    tokens = jnp.asarray(rng.integers(0, 7, (B, L)), jnp.int32)
    model = pj.models.Transformer(cfg)
    params = model.init(jax.random.key(0), tokens)
    t = 5
    base = model.apply(params, tokens)
    moved = model.apply(params, tokens.at[:, t].set((tokens[:, t] + 1) % 7))
    np.testing.assert_array_equal(moved[:, :t], base[:, :t])
    assert np.max(np.abs(moved[:, t:] - base[:, t:])) > 1e-4


def test_refusals_name_the_reason():
    q = jnp.ones((1, 4, 2, 8))
    rule = StickBreaking()
    with pytest.raises(ValueError, match="defined for causal attention"):
        dot_product_attention(q, q, q, stick_breaking=rule)
    with pytest.raises(ValueError, match="has stick_breaking weights"):
        dot_product_attention(q, q, q, causal=True, stick_breaking=rule, implementation="jax")
    with pytest.raises(ValueError, match="has none"):
        dot_product_attention(q, q, q, causal=True, stick_breaking=rule, sink_logits=jnp.zeros(2))
    with pytest.raises(ValueError, match="an encoder's self-attention is bidirectional"):
        _config(architecture="encoder")
    with pytest.raises(ValueError, match="attend_current must be True or False"):
        StickBreaking(attend_current=1)
