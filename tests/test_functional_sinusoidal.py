"""Sinusoidal encoding against the paper's formula (numpy float64) and its stated properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax import functional
from tests.reference import reference_sinusoidal


@pytest.mark.parametrize("dim", [2, 16, 128])
def test_matches_paper_formula(dim):
    positions = np.arange(0, 300, 7)
    got = jax.jit(functional.sinusoidal, static_argnums=1)(positions, dim)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, reference_sinusoidal(positions, dim), atol=2e-5)


def test_batched_positions_shape():
    positions = np.arange(12).reshape(3, 4)
    assert functional.sinusoidal(positions, 8).shape == (3, 4, 8)


def test_relative_offset_is_a_rotation_independent_of_position():
    """PE(t + k) = M_k PE(t) with M_k block-diagonal [[cos wk, sin wk], [-sin wk, cos wk]]."""
    dim, k = 16, 5
    t = np.arange(0, 60)
    pe_t = np.asarray(functional.sinusoidal(t, dim), np.float64)
    pe_tk = np.asarray(functional.sinusoidal(t + k, dim), np.float64)
    rotation = np.zeros((dim, dim))
    for i in range(dim // 2):
        w = 10000.0 ** (-2.0 * i / dim)
        c, s = np.cos(w * k), np.sin(w * k)
        # (sin(w(t+k)), cos(w(t+k))) = [[c, s], [-s, c]] @ (sin wt, cos wt)
        rotation[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[c, s], [-s, c]]
    np.testing.assert_allclose(pe_t @ rotation.T, pe_tk, atol=1e-5)


def test_large_positions_keep_float32_angles():
    """Angles are float32 even when the caller thinks in bfloat16: position 257 != 256."""
    pe = functional.sinusoidal(np.array([256, 257]), 4)
    assert not np.allclose(pe[0], pe[1])


def test_integer_positions_match_float64_far_beyond_training_lengths():
    """Angles reduced in fixed point and vectorized sin/cos: within 1e-6 of float64 up to
    10^7 (a float32 product p * omega alone is off by 0.3 there)."""
    positions = np.array([0, 1, 255, 4097, 65_537, 1_000_003, 9_999_991, -12_345])
    got = jax.jit(functional.sinusoidal, static_argnums=1)(positions, 64)
    np.testing.assert_allclose(got, reference_sinusoidal(positions, 64), atol=1e-6)


def test_odd_dim_is_an_error():
    with pytest.raises(ValueError, match="positive even"):
        functional.sinusoidal(np.arange(3), 7)


def test_normalized_and_integer_features():
    positions = np.array([[0, 1, 2, 3], [0, 1, 2, 0]])
    np.testing.assert_allclose(
        functional.normalized_positions(positions), [[0, 1 / 3, 2 / 3, 1], [0, 0.5, 1, 0]]
    )
    np.testing.assert_allclose(functional.integer_positions(positions), positions)
    # A single token has no span to normalize by: it maps to 0, not NaN.
    np.testing.assert_allclose(functional.normalized_positions(np.array([[0]])), [[0.0]])


@pytest.mark.parametrize("base", [0.0, -1.0, 1.0, float("inf")])
def test_a_base_without_wavelengths_is_an_error(base):
    """A base <= 1 or infinite gives NaN or constant frequencies; Sandwich shares the check."""
    with pytest.raises(ValueError, match="base must be a finite number > 1"):
        functional.sinusoidal(jnp.arange(4), 8, base=base)
    with pytest.raises(ValueError, match="base must be a finite number > 1"):
        functional.sandwich_bias(jnp.arange(4), jnp.arange(4), num_heads=2, base=base)
