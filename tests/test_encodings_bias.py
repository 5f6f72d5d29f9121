"""The relative-bias encodings as modules: parameters, hooks, models, causality, tiling."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import MultiHeadAttention
from tests.test_functional_bias import (
    reference_alibi_slopes,
    reference_fire_normalized,
    reference_sandwich,
    reference_t5_bucket,
)

BIAS_ENCODINGS = ["alibi", "t5", "kerple_log", "kerple_power", "sandwich", "fire"]


class _Holder(nn.Module):
    """Calls an encoding's bias hook the way attention does, inside a parent module."""

    encoding: pj.encodings.PositionalEncoding
    num_heads: int
    causal: bool

    @nn.compact
    def __call__(self, q_positions, k_positions):
        encoding = self.encoding.clone(parent=self, name="bound")
        bias_fn = encoding.bias_fn(num_heads=self.num_heads, causal=self.causal)
        return bias_fn(q_positions, k_positions)


def _bias(encoding, num_heads, causal, q_positions, k_positions, params=None):
    """The bias and the encoding's parameters (fresh from init, or the given ones)."""
    holder = _Holder(encoding, num_heads, causal)
    if params is None:
        params = holder.init(jax.random.key(0), q_positions, k_positions).get("params", {})
        params = params.get("bound", {})
    bias = holder.apply({"params": {"bound": params}}, q_positions, k_positions)
    return np.asarray(bias, np.float64), params


def _distance(q, k):
    return np.abs(np.asarray(q)[..., :, None] - np.asarray(k)[..., None, :]).astype(np.float64)


@pytest.fixture
def positions(rng):
    q = np.sort(rng.choice(600, size=(2, 6), replace=False), axis=-1)
    k = np.sort(rng.choice(600, size=(2, 9), replace=False), axis=-1)
    return jnp.asarray(q, jnp.int32), jnp.asarray(k, jnp.int32)


@pytest.mark.parametrize("name", BIAS_ENCODINGS)
def test_registered_and_bias_only(name):
    assert name in pj.encodings.names()
    encoding = pj.encodings.get(name)
    assert not encoding.causal_only and not encoding.needs_dense

    class Other(nn.Module):
        @nn.compact
        def __call__(self, x, q, k):
            bound = encoding.clone(parent=self, name="encoding")
            positions = jnp.arange(x.shape[1])[None]
            return bound.embed(x, positions), bound.rotate(q, k, positions, positions)

    x, q, k = jnp.ones((1, 3, 8)), jnp.ones((1, 3, 2, 4)), jnp.full((1, 3, 2, 4), 2.0)
    (embedded, (q_out, k_out)), _ = Other().init_with_output(jax.random.key(0), x, q, k)
    np.testing.assert_array_equal(embedded, x)
    np.testing.assert_array_equal(q_out, q)
    np.testing.assert_array_equal(k_out, k)


# Only T5 builds a different bias for causal and bidirectional attention; FIRE is checked
# both ways because its paper defines only the causal case.
HOOK_CASES = [(name, True) for name in BIAS_ENCODINGS] + [("t5", False), ("fire", False)]


@pytest.mark.parametrize("name,causal", HOOK_CASES)
def test_bias_hook_shapes_and_tiles(name, causal, positions):
    """[L] positions give [H, L, S], [B, L] give [B, H, L, S]; and the bias of a tile is the
    tile of the bias (it depends only on the positions given), which the chunked core needs."""
    q, k = positions
    encoding = pj.encodings.get(name)
    full, params = _bias(encoding, 4, causal, q, k)
    assert full.shape == (2, 4, 6, 9) and np.all(np.isfinite(full))
    row, _ = _bias(encoding, 4, causal, q[1], k[1], params)
    assert row.shape == (4, 6, 9)
    np.testing.assert_allclose(row, full[1], rtol=1e-6, atol=1e-6)
    tile, _ = _bias(encoding, 4, causal, q[:, 2:5], k[:, 3:7], params)
    np.testing.assert_allclose(tile, full[..., 2:5, 3:7], rtol=1e-6, atol=1e-6)


def test_alibi_module_uses_the_paper_slopes(positions):
    q, k = positions
    bias, params = _bias(pj.encodings.get("alibi"), 6, True, q, k)
    assert params == {}
    expected = -reference_alibi_slopes(6)[None, :, None, None] * _distance(q, k)[:, None]
    np.testing.assert_allclose(bias, expected, rtol=1e-6)


def test_alibi_on_some_heads_only(positions):
    q, k = positions
    bias, _ = _bias(pj.encodings.get("alibi", alibi_heads=3), 5, False, q, k)
    expected = -reference_alibi_slopes(3)[None, :, None, None] * _distance(q, k)[:, None]
    np.testing.assert_allclose(bias[:, :3], expected, rtol=1e-6)
    np.testing.assert_array_equal(bias[:, 3:], 0.0)


@pytest.mark.parametrize("alibi_heads", [0, 6, 2.0])
def test_alibi_heads_out_of_range_is_an_error(alibi_heads):
    with pytest.raises(ValueError, match="alibi_heads"):
        _bias(
            pj.encodings.get("alibi", alibi_heads=alibi_heads),
            5,
            True,
            jnp.arange(2),
            jnp.arange(2),
        )


@pytest.mark.parametrize("causal", [True, False])
def test_t5_module_looks_up_its_table_by_bucket(causal, positions):
    q, k = positions
    encoding = pj.encodings.get("t5", num_buckets=16, max_distance=64)
    bias, params = _bias(encoding, 3, causal, q, k)
    table = np.asarray(params["relative_attention_bias"])
    assert table.shape == (3, 16)
    relative = np.asarray(k)[:, None, :] - np.asarray(q)[:, :, None]  # key minus query
    buckets = reference_t5_bucket(relative, not causal, 16, 64)
    np.testing.assert_array_equal(bias, np.moveaxis(table[:, buckets], 0, 1))


def test_t5_table_initialization_is_t5x_fan_avg_uniform():
    _, params = _bias(pj.encodings.get("t5"), 32, False, jnp.arange(2), jnp.arange(2))
    table = np.asarray(params["relative_attention_bias"])
    limit = np.sqrt(3.0 / ((32 + 32) / 2))  # variance 1 / fan_avg, uniform
    assert np.abs(table).max() <= limit and np.abs(table).max() > 0.9 * limit


def test_t5_rejects_a_bad_layout_when_the_bias_is_built():
    with pytest.raises(ValueError, match="max_distance=4"):
        _bias(pj.encodings.get("t5", max_distance=4), 2, True, jnp.arange(3), jnp.arange(3))


@pytest.mark.parametrize(
    "name,r1_range,r2_range", [("kerple_log", 2.0, 1.0), ("kerple_power", 1.0, 2.0)]
)
def test_kerple_initialization_follows_the_official_code(name, r1_range, r2_range):
    _, params = _bias(pj.encodings.get(name), 512, True, jnp.arange(2), jnp.arange(2))
    for key, high in (("r1", r1_range), ("r2", r2_range)):
        values = np.asarray(params[key])
        assert values.shape == (512,)
        assert values.min() >= 0 and values.max() < high
        # U(0, high) has mean high / 2 and standard error (high / sqrt(12)) / sqrt(512).
        assert abs(values.mean() - high / 2) < 4 * high / np.sqrt(12 * 512)


def test_kerple_log_module_matches_the_formula_with_clamped_parameters(positions):
    q, k = positions
    params = {"r1": jnp.array([0.5, 0.001, 1.7]), "r2": jnp.array([0.2, 0.9, -1.0])}
    bias, _ = _bias(pj.encodings.get("kerple_log"), 3, True, q, k, params)
    r1 = np.array([0.5, 0.01, 1.7])[None, :, None, None]
    r2 = np.array([0.2, 0.9, 0.01])[None, :, None, None]
    np.testing.assert_allclose(bias, -r1 * np.log1p(r2 * _distance(q, k)[:, None]), rtol=1e-5)


def test_kerple_power_module_matches_the_formula_with_clamped_parameters(positions):
    q, k = positions
    params = {"r1": jnp.array([0.5, 0.0, 0.3]), "r2": jnp.array([1.5, 0.001, 3.0])}
    bias, _ = _bias(pj.encodings.get("kerple_power"), 3, False, q, k, params)
    r1 = np.array([0.5, 0.01, 0.3])[None, :, None, None]
    r2 = np.array([1.5, 0.01, 2.0])[None, :, None, None]
    np.testing.assert_allclose(bias, -r1 * _distance(q, k)[:, None] ** r2, rtol=2e-5)


def _kerple_reference_gradients(name, r1, r2, distance, weights):
    """d/dr1, d/dr2 of sum(weights * bias) at (already clamped) r1, r2, float64."""
    r1, r2 = r1[None, :, None, None], r2[None, :, None, None]
    d = distance[:, None]
    if name == "kerple_log":
        d_r1, d_r2 = -np.log1p(r2 * d), -r1 * d / (1 + r2 * d)
    else:
        powered = np.where(d > 0, d**r2, 0.0)
        d_r1, d_r2 = -powered, -r1 * powered * np.log(np.where(d > 0, d, 1.0))
    return (weights * d_r1).sum((0, 2, 3)), (weights * d_r2).sum((0, 2, 3))


@pytest.mark.parametrize(
    "name,stored,clamped",
    [
        ("kerple_log", ([0.5, 0.001, 1.7], [0.2, 0.9, -1.0]), ([0.5, 0.01, 1.7], [0.2, 0.9, 0.01])),
        (
            "kerple_power",
            ([0.5, 0.0, 0.3], [1.5, 0.001, 3.0]),
            ([0.5, 0.01, 0.3], [1.5, 0.01, 2.0]),
        ),
    ],
)
def test_kerple_parameters_past_their_bounds_still_get_the_gradient_at_the_bound(
    name, stored, clamped, positions, rng
):
    """The official code clamps the stored parameter and differentiates at the clamped value;
    a parameter past its bound must not be frozen by a zero gradient."""
    q, k = positions
    weights = rng.standard_normal((2, 3, 6, 9))
    holder = _Holder(pj.encodings.get(name), 3, False)

    def loss(params):
        bias = holder.apply({"params": {"bound": params}}, q, k)
        return jnp.sum(bias * weights)

    stored = {"r1": jnp.array(stored[0]), "r2": jnp.array(stored[1])}
    got = jax.grad(loss)(stored)
    want_r1, want_r2 = _kerple_reference_gradients(
        name, np.array(clamped[0]), np.array(clamped[1]), _distance(q, k), weights
    )
    np.testing.assert_allclose(got["r1"], want_r1, rtol=2e-5)
    np.testing.assert_allclose(got["r2"], want_r2, rtol=2e-5)
    assert np.all(np.asarray(got["r1"]) != 0) and np.all(np.asarray(got["r2"]) != 0)


def test_sandwich_module_has_no_parameters_and_uses_its_dim(positions):
    q, k = positions
    bias, params = _bias(pj.encodings.get("sandwich", dim=16), 4, True, q, k)
    assert params == {}
    expected = np.moveaxis(reference_sandwich(_distance(q, k), 4, 16), 0, 1)
    np.testing.assert_allclose(bias, expected, atol=5e-5)


def test_fire_parameters_start_as_in_the_paper():
    _, params = _bias(pj.encodings.get("fire"), 4, True, jnp.arange(2), jnp.arange(2))
    assert float(params["c"]) == pytest.approx(0.1)
    assert float(params["threshold_multiplier"]) == 1.0
    shapes = {name: np.shape(value) for name, value in params.items()}
    assert shapes["hidden_kernel"] == (32,) and shapes["out_kernel"] == (32, 4)
    # PyTorch's Linear initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    assert np.abs(params["hidden_kernel"]).max() <= 1.0
    assert np.abs(params["out_kernel"]).max() <= 32**-0.5


@pytest.mark.parametrize("causal", [True, False])
def test_fire_module_matches_a_numpy_forward_pass(causal, rng):
    q, k = np.sort(rng.choice(2000, 5, replace=False)), np.sort(rng.choice(2000, 7, replace=False))
    params = {
        "c": jnp.float32(0.3),
        "threshold_multiplier": jnp.float32(0.25),
        "hidden_kernel": jnp.asarray(rng.normal(size=8), jnp.float32),
        "hidden_bias": jnp.asarray(rng.normal(size=8), jnp.float32),
        "out_kernel": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32),
        "out_bias": jnp.asarray(rng.normal(size=2), jnp.float32),
    }
    encoding = pj.encodings.get("fire", mlp_width=8, init_threshold=400.0)
    bias, _ = _bias(encoding, 2, causal, jnp.asarray(q), jnp.asarray(k), params)
    normalized = reference_fire_normalized(q, k, 0.3, 0.25 * 400.0)
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    hidden = np.maximum(normalized[..., None] * p["hidden_kernel"] + p["hidden_bias"], 0.0)
    expected = np.moveaxis(hidden @ p["out_kernel"] + p["out_bias"], -1, 0)
    np.testing.assert_allclose(bias, expected, rtol=1e-4, atol=1e-5)


def _model_and_tokens(name, architecture, num_layers, rng):
    config = pj.models.TransformerConfig(
        vocab_size=11,
        architecture=architecture,
        d_model=16,
        num_layers=num_layers,
        num_heads=2,
        encoding=pj.encodings.get(name),
    )
    model = pj.models.Transformer(config)
    tokens = jnp.asarray(rng.integers(0, 11, (1, 7)), jnp.int32)
    return model, tokens, model.init(jax.random.key(0), tokens)


@pytest.mark.parametrize("name", BIAS_ENCODINGS)
def test_causal_decoder_under_jit_has_zero_gradient_from_the_future(name, rng):
    model, tokens, variables = _model_and_tokens(name, "decoder", 2, rng)
    # Every layer holds its own copy of the encoding's parameters (T5 included).
    layers = [variables["params"]["decoder"][f"layer_{i}"]["self_attention"] for i in (0, 1)]
    has_params = [bool(layer.get("position_encoding")) for layer in layers]
    assert has_params == [name not in ("alibi", "sandwich")] * 2

    positions = jnp.arange(7)[None] + 100  # offsets are fine: the bias sees distances
    t = 3

    def loss_at_t(perturbations):
        logits = model.apply({**variables, "perturbations": perturbations}, tokens, positions)
        return jnp.sum(logits[0, t] ** 2), logits

    grads, logits = jax.jit(jax.grad(loss_at_t, has_aux=True))(variables["perturbations"])
    assert logits.shape == (1, 7, 11) and bool(jnp.all(jnp.isfinite(logits)))
    grads = grads["decoder"]["input_embeddings"]
    assert np.all(grads[0, t + 1 :] == 0.0)
    assert np.all(np.abs(grads[0, : t + 1]).sum(-1) > 0)


@pytest.mark.parametrize("name", BIAS_ENCODINGS)
def test_encoder_under_jit(name, rng):
    model, tokens, variables = _model_and_tokens(name, "encoder", 1, rng)
    logits = jax.jit(model.apply)(variables, tokens)
    assert logits.shape == (1, 7, 11) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", BIAS_ENCODINGS)
def test_chunked_attention_equals_dense(name, rng):
    x = jnp.asarray(rng.standard_normal((2, 7, 16)), jnp.float32)
    positions = jnp.asarray(np.sort(rng.choice(300, (2, 7), replace=False), axis=-1), jnp.int32)
    encoding = pj.encodings.get(name)
    dense = MultiHeadAttention(num_heads=4, causal=True, encoding=encoding)
    chunked = MultiHeadAttention(num_heads=4, causal=True, encoding=encoding, block_size=3)
    variables = dense.init(jax.random.key(0), x, q_positions=positions)
    expected = dense.apply(variables, x, q_positions=positions)
    out = chunked.apply(variables, x, q_positions=positions)
    np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("architecture", ["decoder", "encoder_decoder"])
def test_t5_table_shared_across_layers_equals_copies_of_one_table(architecture, rng):
    """Shared: one table per stack; the model equals per-layer tables all set to it."""

    def model(shared):
        return pj.models.Transformer(
            pj.models.TransformerConfig(
                vocab_size=11,
                architecture=architecture,
                d_model=16,
                num_layers=3,
                num_heads=2,
                encoding=pj.encodings.get("t5", num_buckets=8, max_distance=16),
                share_encoding_across_layers=shared,
            )
        )

    tokens = jnp.asarray(rng.integers(0, 11, (2, 7)))
    source = jnp.asarray(rng.integers(0, 11, (2, 5))) if architecture != "decoder" else None
    shared = model(True).init(jax.random.key(0), tokens, source=source)["params"]
    # The same parameters laid out per layer: each layer gets a copy of its stack's table.
    copies = jax.tree.map(lambda x: x, shared)
    for stack in ("encoder", "decoder") if source is not None else ("decoder",):
        table = copies[stack].pop("position_encoding")
        assert set(table) == {"relative_attention_bias"}
        for layer in range(3):
            attention = copies[stack][f"layer_{layer}"]["self_attention"]
            assert "position_encoding" not in attention  # no per-layer table when shared
            attention["position_encoding"] = table
    per_layer = model(False).init(jax.random.key(1), tokens, source=source)["params"]
    assert jax.tree.structure(copies) == jax.tree.structure(per_layer)

    got = model(True).apply({"params": shared}, tokens, source=source)
    want = model(False).apply({"params": copies}, tokens, source=source)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # Training moves the one table, with the gradient of every layer's use of it.
    grads = jax.grad(
        lambda p: jnp.sum(model(True).apply({"params": p}, tokens, source=source) ** 2)
    )(shared)
    table_grad = np.asarray(grads["decoder"]["position_encoding"]["relative_attention_bias"])
    assert np.any(table_grad != 0)


@pytest.mark.parametrize("name", BIAS_ENCODINGS)
def test_numpy_head_counts_are_taken_and_fractional_ones_refused(name, positions):
    q, k = positions
    bias, _ = _bias(pj.encodings.get(name), np.int64(3), True, q, k)
    assert bias.shape == (2, 3, 6, 9)
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 3.0"):
        _bias(pj.encodings.get(name), 3.0, True, q, k)
