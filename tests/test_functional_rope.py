"""RoPE, xPos and p-RoPE math against float64 references written from the papers' formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax import functional

# --- independent references (numpy float64) --------------------------------------------


def reference_inv_freq(dim, base=10000.0):
    """RoFormer Eq. (15): theta_t = base^(-2t/d), t = 0 .. d/2 - 1."""
    return np.array([base ** (-2.0 * t / dim) for t in range(dim // 2)])


def pair_indices(dim, layout):
    """The two features of each pair: (t, t + d/2) for "half", (2t, 2t + 1) for "interleaved"."""
    if layout == "half":
        return [(t, t + dim // 2) for t in range(dim // 2)]
    return [(2 * t, 2 * t + 1) for t in range(dim // 2)]


def reference_rope(x, positions, inv_freq, layout, amplitude=None):
    """Applies the 2x2 rotation [[cos, -sin], [sin, cos]] of angle m * theta_t to each pair.

    x [B, L, H, K], positions [B, L], inv_freq [P]; amplitude [B, L, P] multiplies each
    rotated pair (xPos). Features past 2P are copied.
    """
    x = np.asarray(x, np.float64)
    out = x.copy()
    positions = np.asarray(positions, np.float64)
    for t, (a, b) in enumerate(pair_indices(2 * len(inv_freq), layout)):
        angle = positions * inv_freq[t]
        c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
        amp = 1.0 if amplitude is None else amplitude[..., t][..., None]
        out[..., a] = amp * (c * x[..., a] - s * x[..., b])
        out[..., b] = amp * (s * x[..., a] + c * x[..., b])
    return out


def logits(q, k):
    return np.einsum("blhk,bshk->bhls", np.asarray(q, np.float64), np.asarray(k, np.float64))


def unit_vectors(rng, shape):
    x = rng.standard_normal(shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# --- frequencies ---------------------------------------------------------------------------


@pytest.mark.parametrize("dim, base", [(2, 10000.0), (64, 10000.0), (128, 500000.0), (96, 1e6)])
def test_inv_freq_matches_formula(dim, base):
    inv_freq, attention_scale = functional.rope_inv_freq(dim, base=base)
    assert inv_freq.shape == (dim // 2,) and inv_freq.dtype == np.float64
    np.testing.assert_allclose(inv_freq, reference_inv_freq(dim, base), rtol=1e-13)
    assert attention_scale == 1.0


@pytest.mark.parametrize("dim", [7, 0, -4, 6.0])
def test_odd_or_invalid_rotated_dim_is_an_error(dim):
    with pytest.raises(ValueError, match="positive even integer"):
        functional.rope_inv_freq(dim)


@pytest.mark.parametrize("base", [1.0, 0.5, float("inf")])
def test_base_must_exceed_one(base):
    with pytest.raises(ValueError, match="base"):
        functional.rope_inv_freq(8, base=base)


def test_scaling_must_be_a_scaling_object():
    with pytest.raises(ValueError, match="RopeScaling"):
        functional.rope_inv_freq(8, scaling={"rope_type": "linear", "factor": 2.0})


# --- rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [12, 8])  # full and partial rotary of K = 12
def test_apply_rope_matches_pairwise_rotation(rng, layout, rotary_dim):
    x = rng.standard_normal((2, 5, 3, 12)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [7, 19, 300, 4096, 65537]])
    inv_freq, _ = functional.rope_inv_freq(rotary_dim)
    got = jax.jit(lambda x, p: functional.apply_rope(x, p, inv_freq, layout=layout))(x, positions)
    want = reference_rope(x, positions, reference_inv_freq(rotary_dim), layout)
    np.testing.assert_allclose(got, want, atol=2e-6)
    # Partial rotary: the features past the rotated ones are untouched.
    np.testing.assert_array_equal(got[..., rotary_dim:], x[..., rotary_dim:])


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_logits_depend_only_on_relative_position(rng, layout):
    """RoFormer Section 3.4.2: <R(m) q, R(n) k> depends on m - n only."""
    q = unit_vectors(rng, (1, 6, 2, 16))
    k = unit_vectors(rng, (1, 6, 2, 16))
    q_positions = np.array([[0, 3, 5, 8, 13, 40]])
    k_positions = np.array([[1, 2, 6, 7, 30, 41]])
    inv_freq, _ = functional.rope_inv_freq(16)
    rotate = jax.jit(lambda x, p: functional.apply_rope(x, p, inv_freq, layout=layout))

    def rotated_logits(offset):
        return logits(rotate(q, q_positions + offset), rotate(k, k_positions + offset))

    base = rotated_logits(0)
    for offset in (1, 37, 10**5, 10**6, 10**8):
        np.testing.assert_allclose(rotated_logits(offset), base, atol=1e-5)
    # and the rotation does change the logits (the test is not vacuous)
    assert np.max(np.abs(base - logits(q, k))) > 0.1


def test_rotation_preserves_norms(rng):
    x = rng.standard_normal((2, 4, 3, 16)).astype(np.float32)
    positions = np.array([[0, 1, 1000, 10**6], [5, 6, 7, 2**31 - 1]])
    inv_freq, _ = functional.rope_inv_freq(16)
    for layout in ("half", "interleaved"):
        rotated = functional.apply_rope(x, positions, inv_freq, layout=layout)
        np.testing.assert_allclose(
            np.linalg.norm(rotated, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-6
        )


def test_layouts_agree_after_a_fixed_permutation(rng):
    """Interleaved pair (2t, 2t+1) holds what the half layout keeps at (t, t + d/2)."""
    dim = 16
    permutation = np.stack([np.arange(dim // 2), np.arange(dim // 2) + dim // 2], -1).reshape(-1)
    q = rng.standard_normal((2, 5, 2, dim)).astype(np.float32)
    k = rng.standard_normal((2, 5, 2, dim)).astype(np.float32)
    positions = np.array([[0, 1, 2, 3, 4], [10, 200, 3000, 40000, 500000]])
    inv_freq, _ = functional.rope_inv_freq(dim)

    def rope(x, layout):
        return np.asarray(functional.apply_rope(x, positions, inv_freq, layout=layout))

    half_q, half_k = rope(q, "half"), rope(k, "half")
    inter_q, inter_k = (
        rope(q[..., permutation], "interleaved"),
        rope(k[..., permutation], "interleaved"),
    )
    np.testing.assert_allclose(inter_q, half_q[..., permutation], atol=1e-6)
    np.testing.assert_allclose(logits(inter_q, inter_k), logits(half_q, half_k), atol=1e-5)


def test_bfloat16_at_position_one_million_matches_float64(rng):
    x = jnp.asarray(rng.standard_normal((1, 16, 2, 64)), jnp.bfloat16)
    positions = 10**6 + np.arange(16)[None]
    inv_freq, _ = functional.rope_inv_freq(64)
    got = jax.jit(lambda x: functional.apply_rope(x, positions, inv_freq))(x)
    assert got.dtype == jnp.bfloat16
    x64 = np.asarray(x.astype(jnp.float32), np.float64)
    want = reference_rope(x64, positions, reference_inv_freq(64), "half")
    # One bfloat16 rounding of the result: 2^-9 relative; allow 2^-8.
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), want, rtol=2**-8, atol=1e-5)
    # A plain float32 product m * theta is off by ~0.06 rad here and would fail that bound.
    naive_angles = positions.astype(np.float32)[..., None] * inv_freq.astype(np.float32)
    exact_angles = positions[..., None] * reference_inv_freq(64)
    assert np.max(np.abs(np.angle(np.exp(1j * (naive_angles - exact_angles))))) > 1e-2


def test_bfloat16_inputs_keep_position_257(rng):
    """bfloat16 rounds 257 to 256; the angles never see the input dtype."""
    x = jnp.ones((1, 2, 1, 4), jnp.bfloat16)
    positions = np.array([[256, 257]])
    inv_freq, _ = functional.rope_inv_freq(4)
    got = np.asarray(functional.apply_rope(x, positions, inv_freq).astype(jnp.float32))
    want = reference_rope(np.ones((1, 2, 1, 4)), positions, reference_inv_freq(4), "half")
    np.testing.assert_allclose(got, want, rtol=2**-8, atol=1e-3)
    assert not np.allclose(got[0, 0], got[0, 1], atol=0.05)


def test_angles_exact_for_any_int32_position():
    positions = np.array([0, 1, 257, 10**6, 2**24 - 3, -1, -(10**6), 123456789])
    inv_freq, _ = functional.rope_inv_freq(128)
    got = np.asarray(jax.jit(lambda p: functional.rope_angles(p, inv_freq))(positions), np.float64)
    assert np.all(np.abs(got) <= np.pi + 1e-6)
    # float64 reduction is exact to ~1e-8 for |positions| < 2^27
    exact = positions[:, None] * reference_inv_freq(128)[None]
    error = np.abs(np.angle(np.exp(1j * (got - exact))))
    assert error.max() < 1e-6


def test_cos_sin_match_float64_for_any_int32_position():
    """rope_cos_sin's quadrant reduction and polynomials against NumPy's float64 cos and
    sin of the exact angles, over every quadrant (positions -5000..5000 at 64 frequencies)
    and at large positions of both signs."""
    positions = np.concatenate(
        [np.arange(-5000, 5000), [10**6, 2**24 - 3, -(10**6), 123456789, 2**26, -(2**26)]]
    )
    inv_freq, _ = functional.rope_inv_freq(128)
    cos, sin = jax.jit(lambda p: functional.rope_cos_sin(p, inv_freq))(positions)
    exact = positions[:, None] * reference_inv_freq(128)[None]
    np.testing.assert_allclose(np.asarray(cos, np.float64), np.cos(exact), rtol=0, atol=5e-7)
    np.testing.assert_allclose(np.asarray(sin, np.float64), np.sin(exact), rtol=0, atol=5e-7)


def test_traced_frequencies_use_float32_angles(rng):
    """Frequencies computed under jit (e.g. from a traced length) still rotate correctly."""
    x = rng.standard_normal((1, 6, 1, 8)).astype(np.float32)
    positions = np.array([[0, 1, 2, 100, 1000, 4095]])
    inv_freq = reference_inv_freq(8)
    got = jax.jit(lambda x, f: functional.apply_rope(x, positions, f))(
        x, inv_freq.astype(np.float32)
    )
    np.testing.assert_allclose(got, reference_rope(x, positions, inv_freq, "half"), atol=2e-3)


def test_scalar_scale_multiplies_only_rotated_features(rng):
    x = rng.standard_normal((1, 3, 2, 8)).astype(np.float32)
    positions = np.array([[0, 5, 9]])
    inv_freq, _ = functional.rope_inv_freq(4)
    plain = functional.apply_rope(x, positions, inv_freq)
    scaled = functional.apply_rope(x, positions, inv_freq, scale=1.25)
    np.testing.assert_allclose(scaled[..., :4], 1.25 * np.asarray(plain[..., :4]), rtol=1e-6)
    np.testing.assert_array_equal(scaled[..., 4:], x[..., 4:])


def test_apply_rope_errors(rng):
    x = rng.standard_normal((1, 3, 2, 8)).astype(np.float32)
    positions = np.arange(3)[None]
    inv_freq, _ = functional.rope_inv_freq(8)
    with pytest.raises(ValueError, match="unknown RoPE layout 'neox'"):
        functional.apply_rope(x, positions, inv_freq, layout="neox")
    with pytest.raises(ValueError, match="only 8 features"):
        functional.apply_rope(x, positions, functional.rope_inv_freq(10)[0])
    with pytest.raises(ValueError, match="integer"):
        functional.apply_rope(x, positions.astype(np.float32), inv_freq)
    with pytest.raises(ValueError, match="do not match"):
        functional.apply_rope(x, np.arange(4)[None], inv_freq)


# --- p-RoPE ----------------------------------------------------------------------------------


def reference_p_rope_inv_freq(head_dim, p, base=10000.0):
    """Barbero et al. 2025, Appendix D: rope_angles = int(p * d // 2) timescales, the rest inf."""
    rope_angles = int(p * head_dim // 2)
    timescale = [base ** (2.0 * t / head_dim) for t in range(rope_angles)]
    timescale += [np.inf] * (head_dim // 2 - rope_angles)
    return 1.0 / np.array(timescale)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_p_rope_keeps_the_highest_frequencies(p):
    got = functional.p_rope_inv_freq(64, p=p)
    np.testing.assert_allclose(got, reference_p_rope_inv_freq(64, p), rtol=1e-13)
    assert np.count_nonzero(got) == int(p * 32)


def test_p_rope_extremes_are_rope_and_nope(rng):
    x = rng.standard_normal((1, 4, 2, 16)).astype(np.float32)
    positions = np.array([[0, 3, 70, 900]])
    rope = functional.apply_rope(x, positions, functional.rope_inv_freq(16)[0])
    p_one = functional.apply_rope(x, positions, functional.p_rope_inv_freq(16, p=1.0))
    p_zero = functional.apply_rope(x, positions, functional.p_rope_inv_freq(16, p=0.0))
    np.testing.assert_array_equal(p_one, rope)
    np.testing.assert_allclose(p_zero, x, atol=0)


@pytest.mark.parametrize("p", [-0.1, 1.5, True, "0.5"])
def test_p_rope_fraction_out_of_range_is_an_error(p):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        functional.p_rope_inv_freq(16, p=p)


def test_p_rope_takes_numpy_fractions():
    np.testing.assert_array_equal(
        functional.p_rope_inv_freq(16, p=np.float32(0.5)), functional.p_rope_inv_freq(16, p=0.5)
    )


# --- xPos ------------------------------------------------------------------------------------


def test_xpos_zeta_golden_values():
    zeta = functional.xpos_zeta(64)
    assert zeta.shape == (32,)
    np.testing.assert_allclose([zeta[0], zeta[31]], [0.285714, 0.977679], atol=5e-7)
    t = np.arange(32)
    np.testing.assert_allclose(zeta, (2 * t / 64 + 0.4) / 1.4, rtol=1e-14)


def test_xpos_logits_follow_the_paper(rng):
    """Sun et al. Eq. (10): q_n -> zeta^(n/s) R(n) q_n, k_m -> zeta^(-m/s) R(m) k_m."""
    dim, scale_base = 16, 512.0
    q = rng.standard_normal((2, 5, 2, dim)).astype(np.float32)
    k = rng.standard_normal((2, 5, 2, dim)).astype(np.float32)
    q_positions = np.array([[0, 1, 2, 3, 4], [100, 350, 700, 1500, 2000]])
    k_positions = q_positions - np.array([[0], [90]])
    inv_freq, _ = functional.rope_inv_freq(dim)
    zeta = functional.xpos_zeta(dim)
    q_scale, k_scale = functional.xpos_scales(q_positions, k_positions, zeta, scale_base=scale_base)
    got = logits(
        functional.apply_rope(q, q_positions, inv_freq, scale=q_scale),
        functional.apply_rope(k, k_positions, inv_freq, scale=k_scale),
    )
    ref_zeta = (2 * np.arange(dim // 2) / dim + 0.4) / 1.4
    q_amp = ref_zeta ** (q_positions[..., None] / scale_base)
    k_amp = ref_zeta ** (-k_positions[..., None] / scale_base)
    want = logits(
        reference_rope(q, q_positions, reference_inv_freq(dim), "half", q_amp),
        reference_rope(k, k_positions, reference_inv_freq(dim), "half", k_amp),
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_xpos_logits_are_shift_invariant(rng):
    q = unit_vectors(rng, (1, 4, 1, 8))
    k = unit_vectors(rng, (1, 4, 1, 8))
    positions = np.array([[0, 1, 5, 30]])
    inv_freq, _ = functional.rope_inv_freq(8)
    zeta = functional.xpos_zeta(8)

    def xpos_logits(offset):
        p = positions + offset
        q_scale, k_scale = functional.xpos_scales(p, p, zeta)
        return logits(
            functional.apply_rope(q, p, inv_freq, scale=q_scale),
            functional.apply_rope(k, p, inv_freq, scale=k_scale),
        )

    base = xpos_logits(0)
    for offset in (1000, 20_000):
        np.testing.assert_allclose(xpos_logits(offset), base, atol=1e-5)


@pytest.mark.parametrize("scale_base", [0.0, -512.0, float("inf"), float("nan")])
def test_xpos_scale_base_must_be_finite_and_positive(scale_base):
    with pytest.raises(ValueError, match="scale_base must be a finite positive number"):
        functional.xpos_scales(
            np.array([[1]]), np.array([[1]]), functional.xpos_zeta(8), scale_base=scale_base
        )


def test_xpos_span_beyond_float32_range_is_an_error():
    zeta = functional.xpos_zeta(8)
    positions = np.array([[0, 200_000]])
    with pytest.raises(ValueError, match="xPos position 200000 is too large"):
        functional.xpos_scales(positions, positions, zeta)
    with pytest.raises(Exception, match="xPos position 200000 is too large"):
        jax.block_until_ready(jax.jit(lambda p: functional.xpos_scales(p, p, zeta))(positions))


def test_xpos_in_float16_stays_finite_up_to_its_limit_and_is_an_error_beyond(rng):
    """float16's largest value is 65504: its keys' factors overflow from position ~4,500
    (s = 512), so the limit follows the dtype (2,124), where float32's is 33,852."""
    encoding = pj.encodings.get("xpos")
    q, k = (jnp.asarray(unit_vectors(rng, (1, 2, 1, 64)) * 8) for _ in range(2))

    def logits_at(position, dtype):
        positions = jnp.array([[position - 1, position]])
        variables = encoding.init(jax.random.key(0), "rotate", q, k, positions, positions)
        rotated = encoding.apply(
            variables, "rotate", q.astype(dtype), k.astype(dtype), positions, positions
        )
        return logits(*(np.asarray(x, np.float32) for x in rotated))

    near = logits_at(2_124, jnp.float16)
    assert np.isfinite(near).all()
    np.testing.assert_allclose(near, logits_at(2_124, jnp.float32), rtol=0.02, atol=0.1)
    with pytest.raises(ValueError, match="xPos position 2125 is too large.*float16's range"):
        logits_at(2_125, jnp.float16)
    assert np.isfinite(logits_at(2_125, jnp.float32)).all()
    # Components up to 256, which rotation can grow by sqrt(2), stay finite at the limit.
    for dtype, limit in ((jnp.float16, 2_124), (jnp.float32, 33_852), (jnp.bfloat16, 33_851)):
        big = jnp.full((1, 1, 1, 64), 256.0, dtype)
        at = jnp.array([[limit]])
        variables = encoding.init(jax.random.key(0), "rotate", big, big, at, at)
        _, rotated_key = encoding.apply(variables, "rotate", big, big, at, at)
        assert np.isfinite(np.asarray(rotated_key, np.float32)).all(), dtype


def test_turns_at_a_traced_length_equal_the_float64_frequencies_split():
    """rope_turns_at_length under jit and vmap gives the static frequencies, split exactly."""
    scaling = functional.DynamicNTKScaling(factor=2.0, original_max_position_embeddings=64)
    lengths = np.array([1, 64, 65, 1000, 10**6])

    def turns(n):
        return functional.rope_turns_at_length(16, base=1e4, scaling=scaling, seq_len=n)[0]

    got = jax.jit(jax.vmap(turns))(jnp.asarray(lengths))
    for row, n in enumerate(lengths):
        inv_freq, _ = functional.rope_inv_freq(16, scaling=scaling, seq_len=int(n))
        units = np.asarray(got.whole[row], np.float64) + np.asarray(got.fraction[row], np.float64)
        # 2^-32 turn units back to radians per position, against the float64 frequencies.
        np.testing.assert_allclose(units * 2 * np.pi / 2.0**32, inv_freq, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "positions", [np.array([0, 2**31 + 5], np.uint32), np.array([0, -(2**31) - 1], np.int64)]
)
def test_positions_beyond_int32_are_an_error_not_a_wrap(positions):
    """Cast to int32, 2^31 + 5 would become -2^31 + 5: a wrong angle, silently."""
    inv_freq, _ = functional.rope_inv_freq(8)
    with pytest.raises(ValueError, match="RoPE positions must fit int32"):
        functional.rope_cos_sin(positions, inv_freq)
    np.testing.assert_allclose(
        functional.rope_angles(np.array([2**31 - 1], np.int64), inv_freq),
        functional.rope_angles(np.array([2**31 - 1], np.int32), inv_freq),
    )
