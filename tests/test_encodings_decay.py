"""The Forgetting Transformer's forget gate and Cable: content-dependent decays.

Both add ``c_i - c_j`` (``c`` the cumulative sum of per-token log decays computed from the
layer's input) to the logits. Checked against float64 references written from the papers'
formulas, in the dense and chunked backends (values and the gate's gradients), with
padding, with a decoding cache (full and ring buffer), by perturbation for causality; and
Cable against FoX with the gate's sign flipped.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import posenc_jax as pj
from tests.reference import reference_attention

B, L, D, H = 2, 10, 8, 2


def _log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


def reference_log_decay(name, x, params):
    """Per-token log decays [B, H, L] from the papers: FoX log sigmoid(w.x + b), Cable
    -softplus(W x)."""
    x = np.asarray(x, np.float64)
    if name == "fox":
        z = x @ np.asarray(params["gate_kernel"], np.float64) + np.asarray(params["gate_bias"])
        return np.moveaxis(_log_sigmoid(z), -1, 1)
    z = x @ np.asarray(params["bias_kernel"], np.float64)
    return np.moveaxis(-np.logaddexp(0.0, z), -1, 1)


def reference_layer(name, x, params, *, valid=None, window=None, positions=None):
    """Causal multi-head attention with logits q.k / sqrt(K) + c_i - c_j, float64."""
    x = np.asarray(x, np.float64)
    q, k, v = (
        np.einsum("bld,dhk->blhk", x, np.asarray(params[n]["kernel"], np.float64))
        for n in ("query", "key", "value")
    )
    decay = reference_log_decay(name, x, params["position_encoding"])
    if valid is not None:
        decay = np.where(valid[:, None, :], decay, 0.0)
    c = np.cumsum(decay, axis=-1)
    positions = (
        np.broadcast_to(np.arange(x.shape[1]), x.shape[:2]) if positions is None else positions
    )
    allowed = positions[:, None, None, :] <= positions[:, None, :, None]
    if window is not None:
        allowed &= positions[:, None, :, None] - positions[:, None, None, :] < window
    if valid is not None:
        allowed &= valid[:, None, None, :]
    out = reference_attention(q, k, v, bias=c[..., :, None] - c[..., None, :], allowed=allowed)
    return np.einsum("blhk,hkd->bld", out, np.asarray(params["out"]["kernel"], np.float64))


def _layer(name, **options):
    return pj.attention.MultiHeadAttention(
        num_heads=H, causal=True, encoding=pj.encodings.get(name), **options
    )


def _params(name, x, rng):
    """The layer's parameters with a gate far from its start, so that it matters."""
    params = _layer(name).init(jax.random.key(0), x)["params"]
    encoding = params["position_encoding"]
    for key in encoding:
        encoding[key] = jnp.asarray(rng.normal(size=encoding[key].shape), jnp.float32)
    return params


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
@pytest.mark.parametrize("name", ["fox", "cable"])
def test_layer_equals_the_float64_reference(name, implementation, rng):
    x = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    params = _params(name, x, rng)
    block = 4 if implementation == "chunked" else None
    layer = _layer(name, implementation=implementation, block_size=block)
    got = jax.jit(layer.apply)({"params": params}, x)
    want = reference_layer(name, x, params)
    np.testing.assert_allclose(got, want, atol=2e-5)
    # The decay matters: without it (NoPE) the outputs differ.
    plain = {k: v for k, v in params.items() if k != "position_encoding"}
    nope = pj.attention.MultiHeadAttention(num_heads=H, causal=True).apply({"params": plain}, x)
    assert np.max(np.abs(nope - want)) > 1e-2


def test_padding_adds_nothing_to_the_sum(rng):
    """Left padding (3 tokens before the real ones) whose gates are tiny: the real tokens'
    outputs are those of the example alone. Were the padding's log decays (about -1e5 each
    here) summed into c, float32 could not resolve the real tokens' differences."""
    x = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    params = _params("fox", x, rng)
    pad = 3
    kernel = np.asarray(params["position_encoding"]["gate_kernel"])
    padded = np.asarray(x).copy()
    padded[1, :pad] = -1e5 * np.sign(kernel[:, 0])  # drives the gate's logit to -1e5 or so
    valid = np.ones((B, L), bool)
    valid[1, :pad] = False
    positions = np.broadcast_to(np.arange(L), (B, L)) - np.array([[0], [pad]])
    positions = np.maximum(positions, 0).astype(np.int32)
    layer = _layer("fox")
    got = layer.apply(
        {"params": params}, jnp.asarray(padded), q_positions=positions, padding_mask=valid
    )
    alone = layer.apply({"params": params}, x[1:, pad:], q_positions=positions[1:, pad:])
    np.testing.assert_allclose(got[1, pad:], alone[0], atol=1e-5)
    want = reference_layer("fox", padded, params, valid=valid, positions=positions)
    np.testing.assert_allclose(got[1, pad:], want[1, pad:], atol=2e-5)


@pytest.mark.parametrize("window", [None, 3])
def test_decoding_continues_the_cached_sum(window, rng):
    """A prefill of 3 tokens, then one token per call: the outputs of the full pass. With a
    window of 3 the cache is a ring buffer, whose last written slot moves."""
    x = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    params = _params("fox", x, rng)
    full = _layer("fox", window=window).apply({"params": params}, x)
    np.testing.assert_allclose(full, reference_layer("fox", x, params, window=window), atol=2e-5)
    layer = _layer("fox", window=window, decode=True)
    cache = layer.init(jax.random.key(0), x)["cache"]
    assert cache["cached_decay"].shape == (B, window or L, H)  # one c per cached key
    step = jax.jit(
        lambda cache, chunk, at: layer.apply(
            {"params": params, "cache": cache}, chunk, q_positions=at, mutable=["cache"]
        )
    )
    positions = jnp.broadcast_to(jnp.arange(L), (B, L))
    pieces = []
    for start, stop in [(0, 3)] + [(t, t + 1) for t in range(3, L)]:
        out, variables = step(cache, x[:, start:stop], positions[:, start:stop])
        cache = variables["cache"]
        pieces.append(out)
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full, atol=2e-5)


def test_gate_gradients_chunked_equal_dense_and_finite_differences(rng):
    """The chunked backend's hand-written backward pass, through the separable bias, gives
    the gate's gradients of the dense map; the bias's also match central differences of
    the float64 reference."""
    x = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    params = _params("fox", x, rng)
    target = rng.normal(size=(B, L, D))

    def loss(implementation, block):
        layer = _layer("fox", implementation=implementation, block_size=block)
        return lambda p: jnp.sum(layer.apply({"params": p}, x) * target)

    dense = jax.grad(loss("dense", None))(params)["position_encoding"]
    chunked = jax.jit(jax.grad(loss("chunked", 4)))(params)["position_encoding"]
    for key in ("gate_kernel", "gate_bias"):
        np.testing.assert_allclose(chunked[key], dense[key], atol=2e-5, err_msg=key)
        assert np.max(np.abs(dense[key])) > 1e-2, key

    def reference_loss(bias):
        changed = {**params, "position_encoding": {**params["position_encoding"]}}
        changed["position_encoding"]["gate_bias"] = bias
        return np.sum(reference_layer("fox", x, changed) * target)

    bias = np.asarray(params["position_encoding"]["gate_bias"], np.float64)
    step = 1e-5
    for head in range(H):
        delta = np.zeros(H)
        delta[head] = step
        numeric = (reference_loss(bias + delta) - reference_loss(bias - delta)) / (2 * step)
        np.testing.assert_allclose(chunked["gate_bias"][head], numeric, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["fox", "cable"])
def test_causality_by_perturbation(name, rng):
    """Changing the input at t changes no output before t (the decays before t do not
    read it), and does change the outputs from t on."""
    x = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    params = _params(name, x, rng)
    apply = jax.jit(_layer(name).apply)
    base = apply({"params": params}, x)
    t = 6
    moved = apply({"params": params}, x.at[:, t].add(3.0))
    np.testing.assert_array_equal(moved[:, :t], base[:, :t])
    assert np.all(np.max(np.abs(moved[:, t:] - base[:, t:]), axis=-1) > 1e-4)


def test_cable_is_fox_with_the_gate_flipped_and_no_bias(rng):
    """log sigmoid(-z) = -softplus(z): Cable with W is FoX with w = -W, b = 0, exactly."""
    x = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    kernel = jnp.asarray(3 * rng.normal(size=(D, H)), jnp.float32)
    cable = pj.functional.cable_log_decay(x, kernel)
    fox = pj.functional.log_forget_gate(x, -kernel, jnp.zeros(H))
    np.testing.assert_allclose(cable, fox, rtol=1e-6, atol=1e-7)
    cable_params = _params("cable", x, rng)
    fox_params = {k: v for k, v in cable_params.items() if k != "position_encoding"}
    fox_params["position_encoding"] = {
        "gate_kernel": -cable_params["position_encoding"]["bias_kernel"],
        "gate_bias": jnp.zeros(H),
    }
    np.testing.assert_allclose(
        _layer("cable").apply({"params": cable_params}, x),
        _layer("fox").apply({"params": fox_params}, x),
        rtol=1e-6,
        atol=1e-6,
    )


def test_decay_time_initialization_gives_the_time_constants():
    """The official bias initialization: -1 / log sigmoid(b_h) = T_h, log-spaced."""
    bias = np.asarray(pj.functional.decay_time_bias(4, 2.0, 256.0), np.float64)
    times = -1.0 / _log_sigmoid(bias)
    np.testing.assert_allclose(times, np.geomspace(2.0, 256.0, 4), rtol=1e-5)


@pytest.mark.parametrize("gate", ["bias_only", "fixed"])
def test_data_independent_gates(gate, rng):
    """'bias_only' learns b alone, 'fixed' learns nothing; both decay by sigmoid(b_h)."""
    encoding = pj.encodings.get("fox", gate=gate, decay_time=(2.0, 64.0))
    x = jnp.asarray(rng.normal(size=(B, L, D)), jnp.float32)
    layer = pj.attention.MultiHeadAttention(num_heads=H, causal=True, encoding=encoding)
    params = layer.init(jax.random.key(0), x)["params"]
    learned = set(params.get("position_encoding", {}))
    assert learned == ({"gate_bias"} if gate == "bias_only" else set())
    context = pj.encodings.context.HookContext(
        jnp.zeros((B, L), jnp.int32), jnp.zeros((B, L), jnp.int32), inputs=x
    )
    decay = encoding.apply(
        {"params": params.get("position_encoding", {})},
        "decay",
        num_heads=H,
        causal=True,
        context=context,
    )
    want = _log_sigmoid(np.asarray(pj.functional.decay_time_bias(H, 2.0, 64.0), np.float64))
    np.testing.assert_allclose(decay, np.broadcast_to(want[None, :, None], (B, H, L)), rtol=1e-6)


def test_errors_name_the_value_and_the_fix():
    with pytest.raises(ValueError, match="gate='fixed' sets its biases from decay_time"):
        pj.encodings.get("fox", gate="fixed")
    with pytest.raises(ValueError, match="fox gate='input'; valid: full, bias_only, fixed"):
        pj.encodings.get("fox", gate="input")
    with pytest.raises(ValueError, match="0 < decay_time_min <= decay_time_max"):
        pj.encodings.get("fox", decay_time=(8.0, 2.0))
    x = jnp.ones((1, 4, D))
    with pytest.raises(ValueError, match="causal attention only"):
        pj.attention.MultiHeadAttention(num_heads=H, encoding=pj.encodings.get("cable")).init(
            jax.random.key(0), x
        )
    with pytest.raises(ValueError, match="needs self-attention"):
        _layer("fox").init(jax.random.key(0), x, jnp.ones((1, 3, D)))
    with pytest.raises(ValueError, match="needs d_model, which the decay hook does not give"):
        pj.encodings.get("cable").init(jax.random.key(0), "decay", num_heads=H, causal=True)
    with pytest.raises(ValueError, match="hook context does not carry"):
        pj.encodings.get("cable").decay_with({}, num_heads=H, causal=True)


def test_nnx_decoding_keeps_the_decays_of_its_cached_keys(rng):
    """The NNX model's cache holds cached_decay (made by init_cache because the encoding
    has a decay hook); one token per call gives the linen model's full-pass logits."""
    cfg = pj.models.TransformerConfig(
        vocab_size=7,
        d_model=D,
        num_layers=1,
        num_heads=H,
        mlp_dim=16,
        encoding=pj.encodings.get("fox"),
    )
    tokens = jnp.asarray(rng.integers(0, 7, (B, 6)), jnp.int32)
    linen_model = pj.models.Transformer(cfg)
    params = linen_model.init(jax.random.key(0), tokens)["params"]
    params = jax.tree.map(lambda p: p + 0.5 * rng.normal(size=p.shape), params)
    full = linen_model.apply({"params": params}, tokens)
    model = pj.nnx.Transformer(dataclasses.replace(cfg, decode=True), rngs=nnx.Rngs(0))
    pj.nnx.load_linen_params(model, params)
    model.init_cache(B, 6)
    assert model.decoder.layer_0.self_attention.cached_decay[...].shape == (B, 6, H)
    steps = [model(tokens[:, t : t + 1], jnp.full((B, 1), t, jnp.int32)) for t in range(6)]
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5)
