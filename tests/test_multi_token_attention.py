"""MultiTokenAttention against float64 references written from the MTA paper's equations.

Golovneva, Wang, Weston & Sukhbaatar, "Multi-Token Attention", arXiv:2504.00927 (2025):
the key-query convolution (Sec. 2.1, pre- and post-softmax), head mixing (Sec. 2.2) and
group normalization with depth scaling or gating (Sec. 2.3).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import MTAConfig, MultiHeadAttention, MultiTokenAttention
from posenc_jax.attention.multi_token import (
    depth_scale,
    every_fourth_layer,
    key_query_convolution,
)

_MTA_LEAVES = (
    "pre_softmax_kernel",
    "post_softmax_kernel",
    "pre_softmax_head_mix",
    "post_softmax_head_mix",
    "gate_kernel",
    "gate_bias",
    "group_norm_scale",
)


def _inputs(rng, shape=(2, 7, 16)):
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


def _random_mta_params(variables, rng, spread=0.5):
    """Moves every MTA parameter away from its identity initialization."""
    params = dict(variables["params"])
    for name in _MTA_LEAVES:
        if name in params:
            value = np.asarray(params[name])
            moved = value + spread * rng.standard_normal(value.shape)
            params[name] = jnp.asarray(moved, jnp.float32)
    return {**variables, "params": params}


# ---------------------------------------------------------------- float64 reference


def _softmax_rows(logits, keep):
    """Softmax over allowed keys; a row with none gives zeros."""
    out = np.zeros_like(logits)
    for i in range(logits.shape[0]):
        allowed = np.flatnonzero(keep[i])
        if allowed.size:
            row = logits[i, allowed]
            e = np.exp(row - row.max())
            out[i, allowed] = e / e.sum()
    return out


def _paper_theta(kernel):
    """theta[i', j' + half] for i' = 0..c_q-1 and j' = -half..half (kernel flipped on both axes)."""
    return np.asarray(kernel, np.float64)[::-1, ::-1]


def _conv_on_scores(theta, score, visible, i, j, length):
    """sum_{i', j'} theta[i', j'] score(i - i', j - j') over in-range entries ``visible``."""
    q_kernel, k_kernel = theta.shape
    half = (k_kernel - 1) // 2
    total = 0.0
    for di in range(q_kernel):
        for dj in range(-half, half + 1):
            r, c = i - di, j - dj
            if 0 <= r < length and 0 <= c < length and visible(r, c):
                total += theta[di, dj + half] * score(r, c)
    return total


def reference_mta(
    x, params, cfg, *, num_heads, num_kv_heads, layer_index=0, keep=None, indicator_form=False
):
    """MTA written loop by loop from the paper, in float64, no encoding, causal.

    Pre-softmax logits, with the paper's theta (Eq. 2, masked form):
    ``a_ij = softmax_j(sum_{i'=0}^{c_q-1} sum_{j'} 1[i - i' >= j - j'] theta_{i'j'}
    q_{i-i'} . k_{j-j'} / sqrt(d))`` over keys j <= i. ``indicator_form=True`` uses the
    paper's ideal indicator ``1[i >= j - j']`` instead.
    """
    p = {k: np.asarray(v, np.float64) for k, v in _flatten(params).items()}
    x = np.asarray(x, np.float64)
    batch, length, _ = x.shape
    q = np.einsum("bld,dhk->blhk", x, p["query/kernel"])
    k = np.einsum("bld,dhk->blhk", x, p["key/kernel"])
    v = np.einsum("bld,dhk->blhk", x, p["value/kernel"])
    head_dim = q.shape[-1]
    group = num_heads // num_kv_heads
    causal = np.tril(np.ones((length, length), bool))
    convolves = cfg.convolves(layer_index)
    outputs = np.zeros((batch, length, num_heads, head_dim))
    for b in range(batch):
        keep_b = causal if keep is None else causal & keep[b]
        logits = np.zeros((num_heads, length, length))
        for h in range(num_heads):
            qh, kh = q[b, :, h], k[b, :, h // group]

            def score(r, c, qh=qh, kh=kh):
                return qh[r] @ kh[c] / math.sqrt(head_dim)

            if convolves and cfg.pre_softmax_kernel is not None:
                theta = _paper_theta(p["pre_softmax_kernel"][h])
                for i in range(length):
                    if indicator_form:
                        # 1[i >= j - j']: only keys after the *current* query i are dropped.
                        def visible(r, c, i=i, keep_b=keep_b):
                            return keep_b[i, c]
                    else:
                        # Mask_0: keys after the *read* query row r are dropped.
                        def visible(r, c, keep_b=keep_b):
                            return keep_b[r, c]

                    for j in range(length):
                        if keep_b[i, j]:
                            logits[h, i, j] = _conv_on_scores(theta, score, visible, i, j, length)
            else:
                for i in range(length):
                    for j in range(length):
                        logits[h, i, j] = score(i, j) if keep_b[i, j] else 0.0
        if cfg.pre_softmax_head_group is not None:
            logits = _mix(logits * keep_b, p["pre_softmax_head_mix"])
        weights = np.stack([_softmax_rows(logits[h], keep_b) for h in range(num_heads)])
        if convolves and cfg.post_softmax_kernel is not None:
            convolved = np.zeros_like(weights)
            for h in range(num_heads):
                theta = _paper_theta(p["post_softmax_kernel"][h])
                for i in range(length):
                    for j in range(length):
                        if keep_b[i, j]:
                            convolved[h, i, j] = _conv_on_scores(
                                theta,
                                lambda r, c, h=h, weights=weights: weights[h, r, c],
                                lambda r, c, keep_b=keep_b: keep_b[r, c],
                                i,
                                j,
                                length,
                            )
            weights = convolved
        if cfg.post_softmax_head_group is not None:
            weights = _mix(weights, p["post_softmax_head_mix"]) * keep_b
        for h in range(num_heads):
            outputs[b, :, h] = weights[h] @ v[b, :, h // group]
    if cfg.group_norm is not None:
        rms = np.sqrt(np.mean(outputs**2, axis=-1, keepdims=True) + cfg.norm_eps)
        outputs = outputs / rms * p["group_norm_scale"]
        if cfg.group_norm == "depth":
            outputs = outputs * (1.0 - (0.8 - 0.6 * np.exp(-0.3 * layer_index)))
        else:
            gate = 1.0 / (1.0 + np.exp(-(outputs @ p["gate_kernel"] + p["gate_bias"])))
            outputs = outputs * gate[..., None]
    return np.einsum("blhk,hkd->bld", outputs, p["out/kernel"])


def _mix(maps, kernel):
    """out[g c_h + o] = sum_p kernel[g, p, o] maps[g c_h + p] (Sec. 2.2)."""
    groups, size, _ = kernel.shape
    out = np.zeros_like(maps)
    for g in range(groups):
        for o in range(size):
            for p_ in range(size):
                out[g * size + o] += kernel[g, p_, o] * maps[g * size + p_]
    return out


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        else:
            flat[name] = value
    return flat


# ---------------------------------------------------------------- tests


CONFIGS = {
    "pre": MTAConfig(pre_softmax_kernel=(2, 5)),
    "post": MTAConfig(pre_softmax_kernel=None, post_softmax_kernel=(3, 3)),
    "both": MTAConfig(pre_softmax_kernel=(3, 5), post_softmax_kernel=(2, 3)),
    "both_mixed": MTAConfig(
        pre_softmax_kernel=(2, 3),
        post_softmax_kernel=(3, 5),
        pre_softmax_head_group=2,
        post_softmax_head_group=4,
    ),
    "mixed_depth_norm": MTAConfig(
        pre_softmax_kernel=(2, 5), pre_softmax_head_group=4, group_norm="depth"
    ),
    "post_gate": MTAConfig(
        pre_softmax_kernel=None,
        post_softmax_kernel=(2, 3),
        post_softmax_head_group=2,
        group_norm="gate",
    ),
}


@pytest.mark.parametrize(
    "name,num_kv_heads",
    [
        ("pre", 4),
        ("post", 4),
        ("both", 2),
        ("both_mixed", 2),
        ("mixed_depth_norm", 4),
        ("post_gate", 1),
    ],
)
def test_matches_float64_reference_from_the_paper(rng, name, num_kv_heads):
    cfg = CONFIGS[name]
    module = MultiTokenAttention(
        num_heads=4, num_kv_heads=num_kv_heads, causal=True, config=cfg, layer_index=3
    )
    x = _inputs(rng)
    variables = _random_mta_params(module.init(jax.random.key(0), x), rng)
    out = module.apply(variables, x)
    expected = reference_mta(
        x, variables["params"], cfg, num_heads=4, num_kv_heads=num_kv_heads, layer_index=3
    )
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-5)


def test_kernel_orientation_is_not_transposed_or_the_indicator_form(rng):
    """The random pre-softmax kernel matches the flipped (paper theta) reading only."""
    cfg = MTAConfig(pre_softmax_kernel=(3, 5))
    module = MultiTokenAttention(num_heads=2, causal=True, config=cfg)
    x = _inputs(rng, (1, 6, 8))
    variables = _random_mta_params(module.init(jax.random.key(0), x), rng, spread=1.0)
    out = np.asarray(module.apply(variables, x))
    kwargs = {"num_heads": 2, "num_kv_heads": 2}
    np.testing.assert_allclose(out, reference_mta(x, variables["params"], cfg, **kwargs), atol=2e-5)
    # Reading W unflipped (as if it were theta) gives a different layer.
    params = dict(variables["params"])
    params["pre_softmax_kernel"] = params["pre_softmax_kernel"][:, ::-1, ::-1]
    assert np.abs(out - reference_mta(x, params, cfg, **kwargs)).max() > 1e-2
    # The ideal indicator form 1[i >= j - j'] masks less than the implemented two-mask form.
    indicator = reference_mta(x, variables["params"], cfg, indicator_form=True, **kwargs)
    assert np.abs(out - indicator).max() > 1e-3


@pytest.mark.parametrize(
    "name,length",
    [("pre", 7), ("post", 7), ("both", 11), ("both_mixed", 7), ("post_gate", 7)],
)
def test_perturbing_token_t_leaves_earlier_outputs_unchanged(rng, name, length):
    """The lengths are not multiples of the kernel sizes (2, 3, 5); kernels are random."""
    module = MultiTokenAttention(num_heads=4, causal=True, config=CONFIGS[name])
    x = _inputs(rng, (1, length, 16))
    variables = _random_mta_params(module.init(jax.random.key(0), x), rng)
    for t in (1, length // 2, length - 1):
        changed = x.at[:, t].add(jnp.asarray(rng.standard_normal(16), jnp.float32))
        out = np.asarray(module.apply(variables, jnp.concatenate([x, changed])))
        np.testing.assert_array_equal(out[1, :t], out[0, :t])
        assert np.abs(out[1, t] - out[0, t]).max() > 1e-4


def test_convolution_index_convention_reads_only_past_query_rows(rng):
    """Official convention: out[i, j] = sum_ab W[a, b] S0[i + a - (c_q - 1), j + b - half].

    Every one-hot kernel W[a, b] shifts the map down by c_q - 1 - a >= 0 rows (never up:
    no future query) and by half - b columns; what is shifted in is zero padding.
    """
    q_kernel, k_kernel, size = 3, 5, 7
    maps = rng.standard_normal((1, 1, size, size))
    for a in range(q_kernel):
        for b in range(k_kernel):
            kernel = np.zeros((1, q_kernel, k_kernel))
            kernel[0, a, b] = 1.0
            out = np.asarray(key_query_convolution(jnp.asarray(maps, jnp.float32), kernel))
            expected = np.zeros((size, size))
            for i in range(size):
                for j in range(size):
                    r, c = i + a - (q_kernel - 1), j + b - (k_kernel - 1) // 2
                    if 0 <= r < size and 0 <= c < size:
                        expected[i, j] = maps[0, 0, r, c]
            np.testing.assert_allclose(out[0, 0], expected, atol=1e-6)


@pytest.mark.parametrize(
    "encoding,num_kv_heads",
    [("nope", 4), ("rope", 2), ("alibi", 2), ("sinusoidal", 4), ("cope", 4), ("shaw", 2)],
)
def test_identity_initialization_is_multi_head_attention_exactly(rng, encoding, num_kv_heads):
    cfg = MTAConfig(
        pre_softmax_kernel=(2, 5),
        post_softmax_kernel=(3, 3),
        pre_softmax_head_group=2,
        post_softmax_head_group=4,
    )
    common = {
        "num_heads": 4,
        "num_kv_heads": num_kv_heads,
        "causal": True,
        "encoding": pj.encodings.get(encoding),
    }
    module = MultiTokenAttention(config=cfg, **common)
    x = _inputs(rng)
    variables = module.init(jax.random.key(0), x)
    mha_params = {k: v for k, v in variables["params"].items() if k not in _MTA_LEAVES}
    out = module.apply(variables, x)
    expected = MultiHeadAttention(**common).apply({"params": mha_params}, x)
    np.testing.assert_array_equal(out, expected)


def test_identity_initialization_with_temperature_matches_multi_head_attention(rng):
    temperature = pj.attention.temperature.AttentionTemperature("log_length")
    common = {"num_heads": 4, "causal": True, "temperature": temperature}
    module = MultiTokenAttention(config=CONFIGS["both_mixed"], **common)
    x = _inputs(rng)
    variables = module.init(jax.random.key(0), x)
    mha_params = {k: v for k, v in variables["params"].items() if k not in _MTA_LEAVES}
    expected = MultiHeadAttention(**common).apply({"params": mha_params}, x)
    np.testing.assert_array_equal(module.apply(variables, x), expected)
    plain = MultiHeadAttention(num_heads=4, causal=True).apply({"params": mha_params}, x)
    assert np.abs(np.asarray(plain - expected)).max() > 1e-4


def test_group_norm_depth_factor_golden_values():
    """REFERENCES: l = 0, 2, 6, 23 give 0.800, 0.529, 0.299, 0.201 (0-based l)."""
    for layer, expected in [(0, 0.800), (2, 0.529), (6, 0.299), (23, 0.201)]:
        assert abs(depth_scale(layer) - expected) < 5e-4


def test_every_fourth_layer_from_the_third():
    assert every_fourth_layer(24) == (2, 6, 10, 14, 18, 22)
    assert every_fourth_layer(20) == (2, 6, 10, 14, 18)


def test_conv_layers_select_the_convolution_but_not_mixing_or_norm(rng):
    cfg = MTAConfig(
        pre_softmax_kernel=(2, 3), conv_layers=(1,), pre_softmax_head_group=2, group_norm="gate"
    )
    x = _inputs(rng, (1, 5, 8))
    layer0 = MultiTokenAttention(num_heads=2, causal=True, config=cfg, layer_index=0)
    layer1 = MultiTokenAttention(num_heads=2, causal=True, config=cfg, layer_index=1)
    params0 = layer0.init(jax.random.key(0), x)["params"]
    params1 = layer1.init(jax.random.key(0), x)["params"]
    assert "pre_softmax_kernel" not in params0 and params1["pre_softmax_kernel"].shape == (2, 2, 3)
    for params in (params0, params1):
        assert params["pre_softmax_head_mix"].shape == (1, 2, 2)
        assert params["gate_kernel"].shape == (4,) and float(params["gate_bias"]) == 0.0
    # Outside conv_layers, bidirectional use is fine (no convolution there).
    bidirectional = MultiTokenAttention(num_heads=2, config=cfg, layer_index=0)
    assert bidirectional.apply({"params": params0}, x).shape == (1, 5, 8)


def test_jit_and_vmap_agree_with_a_loop(rng):
    module = MultiTokenAttention(
        num_heads=4, num_kv_heads=2, causal=True, config=CONFIGS["both_mixed"]
    )
    xs = _inputs(rng, (3, 2, 6, 16))
    variables = _random_mta_params(module.init(jax.random.key(0), xs[0]), rng)
    batched = jax.jit(jax.vmap(module.apply, in_axes=(None, 0)))(variables, xs)
    for n in range(3):
        np.testing.assert_allclose(batched[n], module.apply(variables, xs[n]), atol=1e-5)


def test_fully_masked_query_rows_give_zeros_with_finite_gradients(rng):
    cfg = MTAConfig(
        pre_softmax_kernel=(2, 3),
        post_softmax_kernel=(2, 3),
        pre_softmax_head_group=2,
        post_softmax_head_group=2,
        group_norm="gate",
    )
    module = MultiTokenAttention(num_heads=2, causal=True, config=cfg)
    x = _inputs(rng, (2, 6, 8))
    mask = np.ones((2, 1, 6, 6), bool)
    mask[0, 0, 3, :] = False
    mask[1, 0, :, :] = False
    mask = jnp.asarray(mask)
    variables = _random_mta_params(module.init(jax.random.key(0), x), rng)
    out = module.apply(variables, x, mask=mask)
    assert np.all(np.asarray(out[0, 3]) == 0.0) and np.all(np.asarray(out[1]) == 0.0)
    assert np.all(np.isfinite(out))

    def loss(params, inputs):
        return jnp.sum(module.apply({"params": params}, inputs, mask=mask) ** 2)

    grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables["params"], x)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_padding_mask_hides_keys(rng):
    module = MultiTokenAttention(num_heads=2, causal=True, config=CONFIGS["both"])
    x = _inputs(rng, (1, 6, 8))
    padding = jnp.array([[True, True, True, True, False, False]])
    variables = _random_mta_params(module.init(jax.random.key(0), x), rng)
    out = module.apply(variables, x, padding_mask=padding)
    keep = np.asarray(padding)[:, None, :].repeat(6, axis=1)
    expected = reference_mta(
        x, variables["params"], CONFIGS["both"], num_heads=2, num_kv_heads=2, keep=keep
    )
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize(
    "kwargs,call_kwargs,message",
    [
        ({"block_size": 4}, {}, "dense only"),
        ({"implementation": "chunked"}, {}, "dense only"),
        ({"causal": False}, {}, "causal attention only"),
        ({}, {"context": True}, "needs self-attention"),
        ({"config": MTAConfig(pre_softmax_head_group=3)}, {}, "must divide num_heads=4"),
        ({"layer_index": -1}, {}, "layer_index must be >= 0"),
    ],
)
def test_requests_mta_cannot_honour_are_errors(kwargs, call_kwargs, message):
    module = MultiTokenAttention(num_heads=4, **{"causal": True, **kwargs})
    x = jnp.ones((1, 5, 8))
    context = jnp.ones((1, 3, 8)) if call_kwargs else None
    with pytest.raises(ValueError, match=message):
        module.init(jax.random.key(0), x, context)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pre_softmax_kernel": (2, 4)}, "c_k odd"),
        ({"post_softmax_kernel": (0, 3)}, "positive integers"),
        ({"pre_softmax_kernel": (True, 3)}, "positive integers"),
        ({"conv_layers": (1, -2)}, "0-based layer indices"),
        ({"conv_layers": 5}, "conv_layers=5; give 0-based layer indices"),
        ({"conv_layers": (1.0,)}, "0-based layer indices"),
        ({"post_softmax_head_group": 0}, "positive group size"),
        ({"group_norm": "layer"}, "group_norm='layer'"),
        ({"norm_eps": 0.0}, "norm_eps must be positive"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MTAConfig(**kwargs)


def test_conv_layers_take_any_iterable_of_indices():
    assert MTAConfig(conv_layers=range(0, 8, 4)).conv_layers == (0, 4)


def _transformer(encoding, num_layers=2, **kwargs):
    config = pj.models.TransformerConfig(
        vocab_size=11,
        d_model=16,
        num_layers=num_layers,
        num_heads=4,
        num_kv_heads=2,
        encoding=encoding,
        attention="multi_token",
        mta=MTAConfig(
            pre_softmax_kernel=(2, 3),
            post_softmax_kernel=(2, 3),
            post_softmax_head_group=2,
            group_norm="depth",
        ),
        **kwargs,
    )
    return pj.models.Transformer(config)


@pytest.mark.parametrize("name", pj.encodings.names())
def test_transformer_runs_every_encoding_with_mta(rng, name):
    model = _transformer(pj.encodings.get(name), num_layers=1)
    tokens = jnp.asarray(rng.integers(1, 11, (2, 6)), jnp.int32)

    # Eager on purpose: per-primitive compilations are shared across the encodings.
    variables = model.init(jax.random.key(0), tokens)
    params, logits = variables["params"], model.apply(variables, tokens)
    assert logits.shape == (2, 6, 11) and bool(jnp.all(jnp.isfinite(logits)))
    layer = params["decoder"]["layer_0"]["self_attention"]
    assert layer["pre_softmax_kernel"].shape == (4, 2, 3)


def test_transformer_with_mta_is_causal(rng):
    """Two layers, random parameters: changing token t changes no logit before t."""
    model = _transformer(pj.encodings.get("rope"))
    tokens = jnp.asarray(rng.integers(1, 11, (1, 6)), jnp.int32)
    variables = model.init(jax.random.key(0), jnp.concatenate([tokens, tokens]))
    variables = {
        **variables,
        "params": jax.tree.map(
            lambda p: p + 0.3 * jnp.asarray(rng.standard_normal(p.shape), p.dtype),
            variables["params"],
        ),
    }
    for t in (1, 3, 5):
        # Batch [original, changed at t]: the same [2, 6] shape as the sweep above, so the
        # eager per-primitive compilations are reused.
        batch = jnp.concatenate([tokens, tokens.at[:, t].set(tokens[0, t] % 10 + 1)])
        logits = np.asarray(model.apply(variables, batch))
        np.testing.assert_array_equal(logits[1, :t], logits[0, :t])
        assert np.abs(logits[1, t] - logits[0, t]).max() > 1e-4


def test_transformer_mta_errors():
    tokens = jnp.ones((1, 4), jnp.int32)
    with pytest.raises(ValueError, match="attention='flash'"):
        pj.models.TransformerConfig(vocab_size=5, attention="flash")
    chunked = _transformer(pj.encodings.get("nope"), attention_block_size=2)
    with pytest.raises(ValueError, match="dense only"):
        jax.eval_shape(chunked.init, jax.random.key(0), tokens)
    encoder = pj.models.Transformer(
        pj.models.TransformerConfig(vocab_size=5, architecture="encoder", attention="multi_token")
    )
    with pytest.raises(ValueError, match="causal attention only"):
        jax.eval_shape(encoder.init, jax.random.key(0), tokens)
    no_conv = pj.models.TransformerConfig(
        vocab_size=5,
        architecture="encoder",
        attention="multi_token",
        mta=MTAConfig(conv_layers=(), pre_softmax_head_group=2),
    )
    shapes = jax.eval_shape(pj.models.Transformer(no_conv).init, jax.random.key(0), tokens)
    layer = shapes["params"]["encoder"]["layer_0"]["self_attention"]
    assert "pre_softmax_kernel" not in layer and layer["pre_softmax_head_mix"].shape == (2, 2, 2)
