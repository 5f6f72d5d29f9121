"""The relative-bias math against numpy float64 references written from the papers."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj

F = pj.functional


# ----------------------------------------------------------------------------- references


def reference_alibi_slopes(num_heads):
    """ALiBi slopes, built as in MPT: from the *next* power of two P, slopes
    2^(-8k/P), k = 1..P; when H < P, the even-indexed ones then the odd ones, cut to H."""
    power = 1 << (num_heads - 1).bit_length()
    slopes = 2.0 ** (-8.0 * np.arange(1, power + 1) / power)
    if power != num_heads:
        slopes = np.concatenate([slopes[1::2], slopes[0::2]])[:num_heads]
    return slopes


def reference_t5_bucket(relative_position, bidirectional, num_buckets, max_distance):
    """T5's float formula (with its eps inside the log), in float64."""
    n = -np.asarray(relative_position, np.int64)
    bucket = np.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        bucket += (n < 0) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        large = max_exact + (
            np.log(n / max_exact + np.finfo(np.float32).eps)
            / np.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return bucket + np.where(n < max_exact, n, large)


def reference_sandwich(distance, num_heads, dim, base=10000.0):
    """(sum_{t=1}^{d'/2} cos(n base^(-2t/d')) - d'/2) / (8h/H), h = 1..H -> [H, ...]."""
    distance = np.asarray(distance, np.float64)
    t = np.arange(1, dim // 2 + 1)
    raw = np.cos(distance[..., None] * base ** (-2.0 * t / dim)).sum(-1) - dim / 2
    heads = np.arange(1, num_heads + 1).reshape((-1,) + (1,) * distance.ndim)
    return raw[None] / (8.0 * heads / num_heads)


def reference_fire_normalized(i, j, c, threshold, eps=1e-6):
    i, j = np.asarray(i, np.float64)[:, None], np.asarray(j, np.float64)[None, :]
    psi = lambda x: np.log(np.abs(c * x) + 1.0)
    return psi(i - j) / (psi(np.maximum(i, abs(threshold))) + eps)


# ----------------------------------------------------------------------------- ALiBi


@pytest.mark.parametrize("num_heads", list(range(1, 65)))
def test_alibi_slopes_match_the_reference_for_1_to_64_heads(num_heads):
    slopes = F.alibi_slopes(num_heads)
    assert slopes.shape == (num_heads,) and slopes.dtype == jnp.float32
    np.testing.assert_allclose(slopes, reference_alibi_slopes(num_heads), rtol=1e-7)


GOLDEN_LOG2_SLOPES = {
    1: [-8],
    2: [-4, -8],
    6: [-2, -4, -6, -8, -1, -3],
    8: [-1, -2, -3, -4, -5, -6, -7, -8],
    12: [-1, -2, -3, -4, -5, -6, -7, -8, -0.5, -1.5, -2.5, -3.5],
    16: list(np.arange(1, 17) * -0.5),
    20: list(np.arange(1, 17) * -0.5) + [-0.25, -0.75, -1.25, -1.75],
}


@pytest.mark.parametrize("num_heads", sorted(GOLDEN_LOG2_SLOPES))
def test_alibi_slopes_golden_log2_values(num_heads):
    np.testing.assert_allclose(
        np.log2(np.asarray(F.alibi_slopes(num_heads), np.float64)),
        GOLDEN_LOG2_SLOPES[num_heads],
        atol=1e-6,
    )


@pytest.mark.parametrize("num_heads", [6, 12, 20, 24, 40])
def test_alibi_slopes_for_non_powers_of_two_interleave_the_next_set(num_heads):
    # The property the paper's code states: the extra heads take slopes *between* those
    # of the smaller power of two, so every smaller-set slope is still present.
    smaller = 2 ** math.floor(math.log2(num_heads))
    slopes = np.asarray(F.alibi_slopes(num_heads))
    np.testing.assert_array_equal(slopes[:smaller], np.asarray(F.alibi_slopes(smaller)))
    assert len(set(slopes.tolist())) == num_heads


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_alibi_slopes_rejects_a_bad_head_count(bad):
    with pytest.raises(ValueError, match="positive integer"):
        F.alibi_slopes(bad)


def test_alibi_bias_is_minus_slope_times_distance(rng):
    q_positions = rng.integers(0, 1000, (3, 5))
    k_positions = rng.integers(0, 1000, (3, 7))
    slopes = reference_alibi_slopes(6)
    bias = F.alibi_bias(F.alibi_slopes(6), jnp.asarray(q_positions), jnp.asarray(k_positions))
    distance = np.abs(q_positions[:, :, None] - k_positions[:, None, :])
    expected = -slopes[None, :, None, None] * distance[:, None]
    assert bias.shape == (3, 6, 5, 7) and bias.dtype == jnp.float32
    np.testing.assert_allclose(bias, expected, rtol=1e-6)


def test_alibi_bias_unbatched_and_mixed_leading_dims():
    slopes = F.alibi_slopes(4)
    bias = F.alibi_bias(slopes, jnp.arange(3), jnp.arange(5))
    assert bias.shape == (4, 3, 5)
    # A [L] query row against batched keys broadcasts to [B, H, L, S].
    batched = F.alibi_bias(slopes, jnp.arange(3), jnp.stack([jnp.arange(5)] * 2))
    assert batched.shape == (2, 4, 3, 5)
    np.testing.assert_array_equal(batched[1], bias)


def test_alibi_causal_part_equals_the_papers_minus_slope_i_minus_j():
    bias = np.asarray(F.alibi_bias(F.alibi_slopes(8), jnp.arange(6), jnp.arange(6)))
    i, j = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    lower = j <= i
    paper = -reference_alibi_slopes(8)[:, None, None] * (i - j)
    np.testing.assert_allclose(bias[:, lower], paper[:, lower], rtol=1e-6)
    assert np.all(np.isfinite(bias))


def test_positions_must_be_integers():
    with pytest.raises(ValueError, match="integer"):
        F.alibi_bias(F.alibi_slopes(2), jnp.arange(3.0), jnp.arange(3))


# ----------------------------------------------------------------------------- T5

T5_LAYOUTS = [(32, 128), (16, 64), (64, 256)]


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", T5_LAYOUTS)
def test_t5_buckets_match_the_t5_formula(num_buckets, max_distance, bidirectional):
    relative = np.arange(-300, 301)
    buckets = F.t5_relative_bucket(
        jnp.asarray(relative),
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    )
    assert buckets.dtype == jnp.int32
    np.testing.assert_array_equal(
        buckets, reference_t5_bucket(relative, bidirectional, num_buckets, max_distance)
    )
    assert buckets.min() >= 0 and buckets.max() < num_buckets


def _first_distance_of_each_bucket(buckets, distances):
    return {int(b): int(distances[np.argmax(buckets == b)]) for b in np.unique(buckets)}


def test_t5_golden_causal_boundaries():
    n = np.arange(0, 300)  # n = i - j, so relative_position = -n
    buckets = np.asarray(F.t5_relative_bucket(jnp.asarray(-n), bidirectional=False))
    np.testing.assert_array_equal(buckets[:16], np.arange(16))
    starts = _first_distance_of_each_bucket(buckets, n)
    golden = [16, 19, 21, 24, 27, 31, 35, 40, 46, 52, 59, 67, 77, 87, 99, 113]
    assert [starts[b] for b in range(16, 32)] == golden
    assert np.all(buckets[113:] == 31)
    # Keys after the query all fall in bucket 0 for causal attention (masked there).
    after = F.t5_relative_bucket(jnp.arange(1, 50), bidirectional=False)
    assert np.all(np.asarray(after) == 0)


def test_t5_golden_bidirectional_boundaries():
    n = np.arange(0, 300)
    before = np.asarray(F.t5_relative_bucket(jnp.asarray(-n), bidirectional=True))
    after = np.asarray(F.t5_relative_bucket(jnp.asarray(n), bidirectional=True))
    np.testing.assert_array_equal(before[:8], np.arange(8))
    starts = _first_distance_of_each_bucket(before, n)
    assert [starts[b] for b in range(8, 16)] == [8, 12, 16, 23, 32, 46, 64, 91]
    assert after[0] == 0 and after[1] == 17 and after[8] == 24
    np.testing.assert_array_equal(after[1:], before[1:] + 16)
    assert np.all(after[91:] == 31)


def test_t5_buckets_are_exact_at_power_of_two_boundaries():
    # n = 16, 32, 64 sit exactly on bucket boundaries for 16 buckets per side; decide
    # them by integers: n belongs to bucket 8 + k with k = floor(8 log(n/8) / log 16).
    n = np.array([15, 16, 31, 32, 63, 64])
    buckets = np.asarray(F.t5_relative_bucket(jnp.asarray(-n), bidirectional=True))
    np.testing.assert_array_equal(buckets, [9, 10, 11, 12, 13, 14])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bidirectional=True, num_buckets=2), "too small"),
        (dict(bidirectional=False, num_buckets=1), "too small"),
        (dict(bidirectional=False, num_buckets=32, max_distance=16), "max_distance=16"),
        (dict(bidirectional=False, num_buckets=32.0), "integer"),
    ],
)
def test_t5_rejects_bad_layouts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.t5_relative_bucket(jnp.arange(3), **kwargs)


def test_t5_rejects_float_relative_positions():
    with pytest.raises(ValueError, match="integer"):
        F.t5_relative_bucket(jnp.arange(3.0), bidirectional=True)


def test_t5_bucket_under_jit_and_any_shape():
    relative = jnp.arange(-50, 50).reshape(2, 5, 10)
    run = jax.jit(lambda r: F.t5_relative_bucket(r, bidirectional=True))
    np.testing.assert_array_equal(
        run(relative), reference_t5_bucket(np.asarray(relative), True, 32, 128)
    )


# ----------------------------------------------------------------------------- KERPLE


def test_kerple_log_matches_the_formula(rng):
    r1, r2 = rng.uniform(0.01, 2, 4), rng.uniform(0.01, 1, 4)
    q, k = rng.integers(0, 3000, (2, 6)), rng.integers(0, 3000, (2, 9))
    bias = F.kerple_log_bias(jnp.asarray(r1), jnp.asarray(r2), jnp.asarray(q), jnp.asarray(k))
    distance = np.abs(q[:, :, None] - k[:, None, :])[:, None]
    expected = -r1[None, :, None, None] * np.log(1 + r2[None, :, None, None] * distance)
    assert bias.shape == (2, 4, 6, 9)
    np.testing.assert_allclose(bias, expected, rtol=1e-5, atol=1e-6)


def test_kerple_power_matches_the_formula(rng):
    r1, r2 = rng.uniform(0.01, 1, 4), rng.uniform(0.01, 2, 4)
    q, k = rng.integers(0, 3000, (6,)), rng.integers(0, 3000, (9,))
    bias = F.kerple_power_bias(jnp.asarray(r1), jnp.asarray(r2), jnp.asarray(q), jnp.asarray(k))
    distance = np.abs(q[:, None] - k[None, :])[None].astype(np.float64)
    expected = -r1[:, None, None] * distance ** r2[:, None, None]
    assert bias.shape == (4, 6, 9)
    np.testing.assert_allclose(bias, expected, rtol=2e-5, atol=1e-6)


def test_kerple_is_zero_on_the_diagonal_and_has_finite_gradients_there():
    positions = jnp.arange(5)
    r1, r2 = jnp.array([0.5, 1.0]), jnp.array([0.3, 1.7])
    for fn in (F.kerple_log_bias, F.kerple_power_bias):
        bias = fn(r1, r2, positions, positions)
        np.testing.assert_array_equal(np.diagonal(bias, axis1=-2, axis2=-1), 0.0)
        grads = jax.grad(lambda a, b, fn=fn: fn(a, b, positions, positions).sum(), (0, 1))(r1, r2)
        assert all(np.all(np.isfinite(g)) for g in grads)


def test_kerple_power_with_exponent_one_is_alibi_like():
    # r2 = 1 makes the power kernel a linear penalty with slope r1, i.e. ALiBi.
    slopes = F.alibi_slopes(4)
    q, k = jnp.arange(7), jnp.arange(7)
    np.testing.assert_allclose(
        F.kerple_power_bias(slopes, jnp.ones(4), q, k), F.alibi_bias(slopes, q, k), rtol=1e-6
    )


# ----------------------------------------------------------------------------- Sandwich

SANDWICH_GOLDEN = {  # distance -> (head 1, head 8) for d' = 64, H = 8
    1: (-0.6235, -0.0779),
    2: (-2.28, -0.285),
    10: (-9.1093, -1.1387),
    100: (-13.9877, -1.7485),
    1000: (-22.6414, -2.8302),
}


def test_sandwich_golden_values():
    distances = np.array([0] + sorted(SANDWICH_GOLDEN))
    bias = np.asarray(F.sandwich_bias(jnp.asarray(distances), jnp.zeros(1, jnp.int32), num_heads=8))
    assert bias.shape == (8, len(distances), 1)
    np.testing.assert_array_equal(bias[:, 0, 0], 0.0)  # raw dot product 32 - d'/2
    for row, distance in enumerate(distances[1:], start=1):
        head1, head8 = SANDWICH_GOLDEN[distance]
        np.testing.assert_allclose(bias[0, row, 0], head1, atol=6e-4)
        np.testing.assert_allclose(bias[7, row, 0], head8, atol=6e-4)


@pytest.mark.parametrize("num_heads,dim", [(8, 64), (3, 16), (12, 128)])
def test_sandwich_matches_the_formula(rng, num_heads, dim):
    q, k = rng.integers(0, 5000, (2, 5)), rng.integers(0, 5000, (2, 6))
    bias = F.sandwich_bias(jnp.asarray(q), jnp.asarray(k), num_heads=num_heads, dim=dim)
    expected = reference_sandwich(np.abs(q[:, :, None] - k[:, None, :]), num_heads, dim)
    # float32 angles up to 5000 rad carry ~3e-4 absolute error each; 64 terms add up.
    np.testing.assert_allclose(bias, np.moveaxis(expected, 0, 1), rtol=2e-5, atol=2e-4)


def test_sandwich_is_the_sinusoid_dot_product():
    # The paper's definition: p_i . p_j of the sinusoidal embeddings (frequencies
    # t = 1..d'/2), minus d'/2; the last head (h = H) is divided by 8.
    positions = np.arange(40)
    t = np.arange(1, 9)
    angles = positions[:, None] * 10000.0 ** (-2.0 * t / 16)
    embeddings = np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)
    expected = embeddings @ embeddings.T - 8
    bias = F.sandwich_bias(jnp.asarray(positions), jnp.asarray(positions), num_heads=8, dim=16)
    np.testing.assert_allclose(bias[7], expected / 8, atol=2e-6)


def test_sandwich_depends_only_on_the_distance_even_for_large_positions():
    base = jnp.arange(6)
    near = F.sandwich_bias(base, base, num_heads=2)
    far = F.sandwich_bias(base + 200_000, base + 200_000, num_heads=2)
    np.testing.assert_allclose(far, near, atol=2e-5)


def test_sandwich_rejects_odd_dim():
    with pytest.raises(ValueError, match="even"):
        F.sandwich_bias(jnp.arange(3), jnp.arange(3), num_heads=2, dim=7)


# ----------------------------------------------------------------------------- FIRE


def test_fire_normalized_distance_golden_values():
    q = jnp.array([10, 511, 1000])
    k = jnp.array([0, 990])
    normalized = np.asarray(F.fire_normalized_distance(q, k))
    np.testing.assert_allclose(normalized[0, 0], 0.175255, atol=2e-6)
    np.testing.assert_allclose(normalized[1, 0], 0.999515, atol=2e-6)
    np.testing.assert_allclose(normalized[2, 0], 1.0, atol=2e-6)
    np.testing.assert_allclose(normalized[2, 1], 0.15019, atol=2e-6)


def test_fire_normalized_distance_matches_the_formula(rng):
    q, k = rng.integers(0, 4000, (7,)), rng.integers(0, 4000, (5,))
    for c, threshold in [(0.1, 512.0), (0.37, 40.0), (-0.2, -100.0)]:
        normalized = F.fire_normalized_distance(
            jnp.asarray(q), jnp.asarray(k), c=c, threshold=threshold
        )
        np.testing.assert_allclose(
            normalized, reference_fire_normalized(q, k, c, threshold), rtol=1e-5
        )


def test_fire_normalized_distance_lies_in_unit_interval_below_the_diagonal():
    positions = jnp.arange(0, 3000, 7)
    normalized = np.asarray(F.fire_normalized_distance(positions, positions, threshold=64.0))
    lower = np.tril(np.ones(normalized.shape, bool))
    assert normalized[lower].min() >= 0 and normalized[lower].max() <= 1


def test_fire_mlp_matches_a_numpy_mlp(rng):
    width, heads = 32, 3
    params = [rng.normal(size=s) for s in [(width,), (width,), (width, heads), (heads,)]]
    normalized = rng.uniform(0, 1, (2, 4, 5))
    bias = F.fire_mlp(jnp.asarray(normalized), *map(jnp.asarray, params))
    hidden = np.maximum(normalized[..., None] * params[0] + params[1], 0.0)
    expected = np.moveaxis(hidden @ params[2] + params[3], -1, -3)
    assert bias.shape == (2, heads, 4, 5)
    np.testing.assert_allclose(bias, expected, rtol=1e-5, atol=1e-5)


def test_fire_mlp_rejects_mismatched_parameters():
    with pytest.raises(ValueError, match="out_kernel"):
        F.fire_mlp(jnp.zeros((2, 2)), jnp.zeros(4), jnp.zeros(4), jnp.zeros((5, 2)), jnp.zeros(2))


# ----------------------------------------------------------------------------- shared


def test_relative_positions_is_i_minus_j():
    rel = F.relative_positions(jnp.array([[3, 5]]), jnp.array([[0, 4, 9]]))
    np.testing.assert_array_equal(rel, [[[3, -1, -6], [5, 1, -4]]])


def test_relative_positions_rejects_leading_dims_that_do_not_broadcast():
    with pytest.raises(ValueError, match="do not broadcast"):
        F.relative_positions(jnp.zeros((2, 3), jnp.int32), jnp.zeros((3, 3), jnp.int32))


@pytest.mark.parametrize("eps", [0.0, -1e-6, float("nan")])
def test_fire_eps_must_keep_the_normalizer_off_zero(eps):
    """With eps = 0, query 0 and a learned threshold at 0 give 0 / 0 (NaN)."""
    with pytest.raises(ValueError, match="FIRE eps must be a finite number > 0"):
        pj.functional.fire_normalized_distance(jnp.arange(3), jnp.arange(3), threshold=0.0, eps=eps)


@pytest.mark.parametrize("bad", [-1.0, 15.5, 16.0, float("nan")])
def test_cope_positions_outside_the_table_are_an_error(bad):
    """-1 would read the table's last row, 15.5 and 16 would read past it (NaN)."""
    q = jnp.ones((1, 1, 1, 4))
    table = jnp.ones((16, 4))
    positions = jnp.array([[[[0.0, bad]]]])
    with pytest.raises(ValueError, match=r"outside \[0, npos - 1\] = \[0, 15\]"):
        pj.functional.cope_logits(q, table, positions)
    pj.functional.cope_logits(q, table, jnp.array([[[[0.0, 15.0]]]]))  # the edges are fine


@pytest.mark.parametrize(
    "variant,r1,r2,message",
    [
        ("log", [1.0, -0.5], [0.5, 0.5], r"KERPLE log r1 must be > 0"),
        ("log", [1.0, 1.0], [0.5, -0.5], r"KERPLE log r2 must be > 0"),
        ("power", [1.0, 1.0], [0.5, 3.0], r"KERPLE power r2 must be in \(0, 2\]"),
        ("power", [1.0, 1.0], [0.0, 1.0], r"KERPLE power r2 must be in \(0, 2\]"),
    ],
)
def test_kerple_parameters_outside_the_kernel_are_an_error(variant, r1, r2, message):
    """log(1 + r2 d) is NaN for r2 d < -1; r2 > 2 is not a valid power kernel."""
    bias = getattr(pj.functional, f"kerple_{variant}_bias")
    with pytest.raises(ValueError, match=message):
        bias(jnp.array(r1), jnp.array(r2), jnp.arange(5), jnp.arange(5))


def test_t5_direction_must_be_a_bool():
    """None would otherwise read as False: one-sided buckets in an encoder."""
    with pytest.raises(ValueError, match="bidirectional must be True .* got None"):
        pj.functional.t5_relative_bucket(jnp.arange(3), bidirectional=None)


def test_shaw_positions_must_be_integers():
    """2.7 would be cut to a table index."""
    with pytest.raises(ValueError, match="Shaw q_positions must be an integer array"):
        pj.functional.shaw_relative_index(jnp.array([0.0, 2.7]), jnp.arange(2), 4)
