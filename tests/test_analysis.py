"""posenc_jax.analysis: the numbers behind the figures, against float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax import analysis
from tests.reference import reference_attention, reference_sinusoidal

# 1. Permutation equivariance ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs,equivariant",
    [
        ("nope", {}, True),
        ("sinusoidal", {}, False),
        ("learned", {"max_length": 6}, False),
        ("rope", {}, False),
    ],
)
def test_permutation_test_separates_encoder_with_and_without_position(name, kwargs, equivariant):
    result = analysis.permutation_test(
        pj.encodings.get(name, **kwargs), length=6, d_model=16, num_heads=2, vocab_size=8
    )
    assert not np.array_equal(result.permutation, np.arange(6))
    assert sorted(result.permutation.tolist()) == list(range(6))
    assert result.outputs_of_permuted.shape == result.permuted_outputs.shape == (6, 8)
    expected = np.max(np.abs(result.outputs_of_permuted - result.permuted_outputs))
    assert result.max_error == pytest.approx(expected)
    if equivariant:
        assert result.max_error < 1e-5
    else:
        assert result.max_error > 1e-2


def test_permutation_test_rejects_a_length_it_cannot_permute():
    with pytest.raises(ValueError, match="length=1"):
        analysis.permutation_test(pj.encodings.get("nope"), length=1)
    with pytest.raises(ValueError, match="vocab_size=4"):
        analysis.permutation_test(pj.encodings.get("nope"), length=5, vocab_size=4)


# 2. Normalized and integer positions ---------------------------------------------------------


def test_normalized_step_shrinks_with_length_and_integer_step_does_not():
    lengths = [4, 8, 64]
    normalized = analysis.neighbour_step(pj.functional.normalized_positions, lengths)
    np.testing.assert_allclose(normalized, [1 / 3, 1 / 7, 1 / 63], rtol=1e-6)
    integer = analysis.neighbour_step(pj.functional.integer_positions, lengths)
    np.testing.assert_allclose(integer, [1.0, 1.0, 1.0])


def test_neighbour_step_rejects_nonlinear_features_and_short_lengths():
    with pytest.raises(ValueError, match="varies"):
        analysis.neighbour_step(lambda p: p.astype(jnp.float32) ** 2, [5])
    with pytest.raises(ValueError, match="at least 2"):
        analysis.neighbour_step(pj.functional.integer_positions, [1])
    # A small curvature is still curvature: steps from 1e-9 to 1.7e-8.
    with pytest.raises(ValueError, match="varies"):
        analysis.neighbour_step(lambda p: 1e-9 * p.astype(jnp.float32) ** 2, [10])
    with pytest.raises(ValueError, match="an integer of at least 2 to have neighbours, got 4.7"):
        analysis.neighbour_step(pj.functional.integer_positions, [4.7])


def test_dot_product_profile_refuses_fractional_distances():
    with pytest.raises(ValueError, match="1-D list of integers"):
        analysis.dot_product_profile([0.5], 128)


def test_sinusoidal_norm_is_bounded_and_integer_norm_grows_linearly():
    positions = np.array([0, 1, 10, 100, 1000])
    sinusoidal = analysis.position_norms(pj.encodings.get("sinusoidal"), positions, 16)
    np.testing.assert_allclose(sinusoidal, np.sqrt(8.0), rtol=1e-5)
    encoding = pj.encodings.get("integer")
    vectors = analysis.position_vectors(encoding, positions, 16, seed=3)
    direction_norm = np.linalg.norm(vectors[1].astype(np.float64))
    integer = analysis.position_norms(encoding, positions, 16, seed=3)
    np.testing.assert_allclose(integer, positions * direction_norm, rtol=1e-5)


def test_position_vectors_of_sinusoidal_match_the_reference():
    vectors = analysis.position_vectors(pj.encodings.get("sinusoidal"), np.arange(7), 12)
    np.testing.assert_allclose(vectors, reference_sinusoidal(np.arange(7), 12), atol=1e-6)


def test_position_vectors_use_given_params():
    table = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    encoding = pj.encodings.get("learned", max_length=4)
    vectors = analysis.position_vectors(encoding, [2, 0], 3, params={"table": table})
    np.testing.assert_array_equal(vectors, table[[2, 0]])


# 3. Binary counter ---------------------------------------------------------------------------


def test_binary_counter_matches_python_bits():
    bits = analysis.binary_counter(16, 4)
    expected = np.array([[int(c) for c in format(n, "04b")[::-1]] for n in range(16)])
    np.testing.assert_array_equal(bits, expected)
    flips = np.sum(np.abs(np.diff(bits, axis=0)), axis=0)
    assert flips.tolist() == [15, 7, 3, 1]  # the lowest bit flips fastest


def test_binary_counter_rejects_too_few_bits():
    with pytest.raises(ValueError, match="at least 5 bits"):
        analysis.binary_counter(17, 4)


# 4. Relative shift ---------------------------------------------------------------------------


def test_closed_form_shift_rotation_maps_the_float64_encoding():
    dim, t = 16, np.arange(40)
    for k in (0, 1, 7, 33):
        matrix = analysis.shift_rotation(dim, k)
        shifted = reference_sinusoidal(t + k, dim)
        # The map uses the encoding's float32 frequencies: off by ~1e-7 * k rad from float64.
        np.testing.assert_allclose(shifted, reference_sinusoidal(t, dim) @ matrix.T, atol=1e-7)
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(dim), atol=1e-12)


def test_least_squares_shift_maps_equal_the_closed_form():
    offsets = [1, 3, 10, 50]
    fit = analysis.fit_shift_maps(32, offsets, num_positions=128)
    assert fit.fitted.shape == fit.closed_form.shape == (4, 32, 32)
    assert fit.fit_error < 1e-5
    assert fit.residual < 1e-4
    # Independent check of the fitted maps on positions the fit never saw.
    t = np.arange(500, 540)
    for index, k in enumerate(offsets):
        predicted = reference_sinusoidal(t, 32) @ fit.fitted[index].T
        np.testing.assert_allclose(predicted, reference_sinusoidal(t + k, 32), atol=1e-4)


def test_fit_shift_maps_rejects_bad_offsets():
    with pytest.raises(ValueError, match="offsets"):
        analysis.fit_shift_maps(8, [-1])
    with pytest.raises(ValueError, match="num_positions"):
        analysis.fit_shift_maps(8, [1], num_positions=1)


# 5. Dot products -----------------------------------------------------------------------------


def test_dot_product_matrix_is_symmetric_toeplitz_and_matches_the_formula():
    dim, positions = 64, np.arange(60)
    products = analysis.position_dot_products(positions, dim)
    np.testing.assert_allclose(products, products.T, atol=1e-5)
    np.testing.assert_allclose(products[1:, 1:], products[:-1, :-1], atol=1e-4)
    np.testing.assert_allclose(np.diag(products), dim / 2, atol=1e-4)
    omega = 10000.0 ** (-np.arange(0, dim, 2) / dim)
    distance = positions[:, None] - positions[None, :]
    expected = np.cos(distance[..., None] * omega).sum(-1)
    np.testing.assert_allclose(products, expected, atol=1e-4)


def test_dot_product_profile_decays_but_not_monotonically():
    dim, distances = 128, np.arange(0, 301)
    profile = analysis.dot_product_profile(distances, dim)
    omega = 10000.0 ** (-np.arange(0, dim, 2) / dim)
    np.testing.assert_allclose(profile, np.cos(distances[:, None] * omega).sum(-1), atol=1e-4)
    assert profile[0] == pytest.approx(dim / 2)
    assert np.all(profile[1:] < profile[0])
    assert profile[200:].mean() < profile[1:50].mean()
    assert np.any(np.diff(profile) > 0)  # ripples: not monotonic


# 6. RoPE long-term decay ---------------------------------------------------------------------


def test_integral_of_linear_schedule_is_a_sinc_with_zeros_at_two_pi_n():
    m = np.linspace(0.1, 40, 200)
    magnitude = analysis.rope_decay_integral(m, lambda s: s)
    np.testing.assert_allclose(magnitude, np.abs(np.sin(m / 2) / (m / 2)), atol=1e-9)
    zeros = analysis.rope_decay_integral(2 * np.pi * np.arange(1, 6), lambda s: s)
    assert np.all(zeros < 1e-9)
    # It comes back up after each zero: oscillation, not decay.
    assert analysis.rope_decay_integral(np.array([3 * np.pi]), lambda s: s)[0] > 0.2


def test_standard_schedule_decays_and_has_no_zero():
    m = np.linspace(0, 200, 801)
    magnitude = analysis.rope_decay_integral(m, lambda s: 10000.0**-s)
    assert magnitude[0] == pytest.approx(1.0)
    assert magnitude.min() > 0.3
    assert magnitude[-1] < magnitude[40] < magnitude[4]


def test_sum_form_against_float64_reference():
    inv_freq, _ = pj.functional.rope_inv_freq(64)
    m = np.array([0, 1, 5, 50, 500, 5000])
    reference = np.abs(np.exp(1j * m[:, None] * 10000.0 ** (-np.arange(0, 64, 2) / 64)).mean(-1))
    np.testing.assert_allclose(analysis.rope_decay(m, inv_freq), reference, atol=1e-12)
    # Linearly spaced frequencies theta_j = j/P: a geometric series, zero at m = 2 pi.
    pairs = 32
    linear = np.arange(pairs) / pairs
    assert analysis.rope_decay(np.array([2 * np.pi]), linear)[0] < 1e-12


def test_su_relative_upper_bound():
    inv_freq = 10000.0 ** (-np.arange(0, 128, 2) / 128)
    m = np.array([0.0, 10.0, 250.0])
    expected = [np.mean([abs(sum(np.exp(1j * d * inv_freq[:j]))) for j in range(1, 65)]) for d in m]
    bound = analysis.rope_decay_bound(m, inv_freq)
    np.testing.assert_allclose(bound, expected, rtol=1e-12)
    assert bound[0] == pytest.approx(32.5)  # (P + 1) / 2
    assert bound[2] < bound[1] < bound[0]


def test_rope_decay_integral_refuses_an_unresolved_phase():
    with pytest.raises(ValueError, match="num_points >= "):
        analysis.rope_decay_integral(np.array([1e5]), lambda s: s, num_points=101)
    with pytest.raises(ValueError, match="odd"):
        analysis.rope_decay_integral(np.array([1.0]), lambda s: s, num_points=100)


def test_a_jump_in_the_schedule_is_an_error_not_an_endless_search():
    """p-RoPE's continuous schedule drops to 0 at s = 0.75: no spacing resolves the jump."""
    with pytest.raises(ValueError, match="jumps by 1 rad .* however many there are"):
        analysis.rope_decay_integral(
            np.array([1000.0]), lambda s: np.where(s < 0.75, 10000.0**-s, 0.0)
        )


@pytest.mark.parametrize(
    "distance,schedule", [(7.3, lambda s: 10 * s), (3000.0, lambda s: 10000.0**-s)]
)
def test_the_num_points_an_unresolved_phase_asks_for_is_accepted(distance, schedule):
    """A linear step at exactly the limit, and a curved schedule, took the estimate short."""
    with pytest.raises(ValueError, match="num_points >= ") as error:
        analysis.rope_decay_integral(np.array([distance]), schedule, num_points=3)
    needed = int(str(error.value).split("num_points >= ")[1].split()[0])
    analysis.rope_decay_integral(np.array([distance]), schedule, num_points=needed)


# 7. Bias shapes ------------------------------------------------------------------------------


def test_alibi_profile_is_minus_slope_times_distance():
    distances = np.arange(0, 20)
    profile = analysis.bias_profile(pj.encodings.get("alibi"), distances, num_heads=4)
    slopes = 2.0 ** (-8.0 * np.arange(1, 5) / 4)
    np.testing.assert_allclose(profile, -slopes[:, None] * distances[None, :], rtol=1e-6)


def test_kerple_log_profile_with_given_params():
    r1, r2 = np.array([1.0, 0.5], np.float32), np.array([0.3, 2.0], np.float32)
    distances = np.arange(0, 10)
    profile = analysis.bias_profile(
        pj.encodings.get("kerple_log"), distances, num_heads=2, params={"r1": r1, "r2": r2}
    )
    expected = -r1[:, None] * np.log1p(r2[:, None] * distances[None, :])
    np.testing.assert_allclose(profile, expected, rtol=1e-5, atol=1e-6)


def test_t5_profile_is_constant_within_a_bucket():
    # Causal buckets (num_buckets 32, max_distance 128): 16..18 share bucket 16, 19 starts 17.
    distances = np.arange(0, 25)
    profile = analysis.bias_profile(pj.encodings.get("t5"), distances, num_heads=3, seed=1)
    np.testing.assert_array_equal(profile[:, 16], profile[:, 17])
    np.testing.assert_array_equal(profile[:, 16], profile[:, 18])
    assert np.all(profile[:, 18] != profile[:, 19])


def test_bias_profile_errors():
    with pytest.raises(ValueError, match="no bias"):
        analysis.bias_profile(pj.encodings.get("rope"), np.arange(3), num_heads=2)
    with pytest.raises(ValueError, match="negative key position"):
        analysis.bias_profile(
            pj.encodings.get("alibi"), np.arange(5), num_heads=2, query_position=2
        )


# 8. Attention maps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encoding,shared", [("rope", False), ("alibi", False), ("rope", True), ("t5", True)]
)
def test_attention_weights_reproduce_every_layer_output(encoding, shared, rng):
    """Also with one encoding shared by the layers of a stack, which belongs to the stack
    rather than to any attention layer."""
    config = pj.models.TransformerConfig(
        share_encoding_across_layers=shared,
        vocab_size=10,
        architecture="encoder_decoder",
        d_model=16,
        num_layers=1,
        num_heads=2,
        mlp_dim=16,
        encoding=pj.encodings.get(encoding),
    )
    tokens = jnp.asarray(rng.integers(1, 10, (2, 5)), jnp.int32)
    source = jnp.asarray(rng.integers(1, 10, (2, 7)), jnp.int32)
    params = pj.models.Transformer(config).init(jax.random.key(0), tokens, source=source)["params"]
    weights, records = analysis.attention_weights(
        config, params, tokens, source=source, return_records=True
    )
    assert set(weights) == {
        "encoder/layer_0/self_attention",
        "decoder/layer_0/self_attention",
        "decoder/layer_0/cross_attention",
    }
    assert weights["encoder/layer_0/self_attention"].shape == (2, 2, 7, 7)
    assert weights["decoder/layer_0/cross_attention"].shape == (2, 2, 5, 7)
    for path, w in weights.items():
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
        # The weights times the layer's values are the layer's own attention output.
        values = np.asarray(records[path]["value"], np.float64)
        output = np.einsum("bhls,bshk->blhk", w, values)
        np.testing.assert_allclose(output, records[path]["attention_output"], atol=1e-5)
    causal = weights["decoder/layer_0/self_attention"]
    assert np.all(causal[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] == 0.0)


def test_attention_weights_of_a_plain_layer_match_the_reference(rng):
    """No encoding anywhere: the weights are softmax(q k^T / sqrt(K)) of the projections."""
    config = pj.models.TransformerConfig(
        vocab_size=10, architecture="encoder", d_model=8, num_layers=1, num_heads=2, mlp_dim=8
    )
    tokens = jnp.asarray(rng.integers(1, 10, (1, 6)), jnp.int32)
    params = pj.models.Transformer(config).init(jax.random.key(2), tokens)["params"]
    weights, records = analysis.attention_weights(config, params, tokens, return_records=True)
    record = records["encoder/layer_0/self_attention"]
    q, k = (np.asarray(record[name], np.float64) for name in ("query", "key"))
    # reference_attention with identity values returns the weights themselves.
    identity = np.broadcast_to(np.eye(6)[None, :, None, :], (1, 6, 2, 6))
    expected = np.moveaxis(reference_attention(q, k, identity), 1, 2)
    np.testing.assert_allclose(weights["encoder/layer_0/self_attention"], expected, atol=1e-6)


def test_attention_weights_rejects_multi_token_attention():
    config = pj.models.TransformerConfig(vocab_size=10, attention="multi_token")
    with pytest.raises(ValueError, match="multi_head"):
        analysis.attention_weights(config, {}, jnp.zeros((1, 3), jnp.int32))


@pytest.mark.parametrize(
    "overrides",
    [{"encoding": "fox", "attention_sink": True}, {"attention": "stick_breaking"}],
    ids=["fox_with_a_sink", "stick_breaking"],
)
def test_attention_weights_reproduce_decays_sinks_and_stick_breaking(overrides, rng):
    """The recomputed weights include the forget gate's c_i - c_j (with a padded example),
    the sink logits and stick-breaking's rule: they reproduce each layer's output."""
    overrides = dict(overrides)
    encoding = pj.encodings.get(overrides.pop("encoding", "nope"))
    config = pj.models.TransformerConfig(
        vocab_size=10, d_model=16, num_layers=2, num_heads=2, encoding=encoding, **overrides
    )
    tokens = jnp.asarray(rng.integers(1, 10, (2, 6)), jnp.int32)
    padding = jnp.asarray([[True] * 6, [True] * 4 + [False] * 2])
    params = pj.models.Transformer(config).init(jax.random.key(0), tokens)["params"]
    params = jax.tree.map(lambda p: p + 0.3 * rng.normal(size=p.shape), params)
    weights, records = analysis.attention_weights(
        config, params, tokens, padding_mask=padding, return_records=True
    )
    for path, w in weights.items():
        values = np.asarray(records[path]["value"], np.float64)
        output = np.einsum("bhls,bshk->blhk", w, values)
        np.testing.assert_allclose(output, records[path]["attention_output"], atol=1e-5)
        totals = w.sum(-1)  # a softmax row sums to 1 (or 0 when nothing is allowed)
        assert np.any((totals > 0.01) & (totals < 0.99))  # the sink's, the stick's remainder
