"""FoPE against a float64 reference written from the paper's formula, and its properties.

The reference computes, per head ``h`` (key/value group ``g = h // (H / G)``) and pair
``t`` (features ``t`` and ``t + K/2``), the Fourier series ``C = sum_f cos(w_f n) A[g, f, t]``
and ``S = sum_f sin(w_f n) B[g, f, t]`` (``C = S = 1`` past the series) and the turn
``(a C - b S, b C + a S)``, in float64 loops. The coefficients are inputs (the official
code fixes them at random), taken from ``fope_coefficients``.
"""

import math

import jax.numpy as jnp
import numpy as np

import posenc_jax as pj
from posenc_jax.encodings.context import HookContext

K, L_TRAIN = 32, 40


def _reference(x, positions, inv_freq, cos_coefficients, sin_coefficients):
    x = np.asarray(x, np.float64)
    batch, length, heads, features = x.shape
    groups, _, series = cos_coefficients.shape
    half = features // 2
    out = x.copy()
    for b in range(batch):
        for i in range(length):
            n = float(positions[b, i])
            for h in range(heads):
                g = h // (heads // groups)
                for t in range(half):
                    c = s = 1.0
                    if t < series:
                        c = sum(
                            math.cos(w * n) * cos_coefficients[g, f, t]
                            for f, w in enumerate(inv_freq)
                        )
                        s = sum(
                            math.sin(w * n) * sin_coefficients[g, f, t]
                            for f, w in enumerate(inv_freq)
                        )
                    a, b2 = x[b, i, h, t], x[b, i, h, t + half]
                    out[b, i, h, t] = a * c - b2 * s
                    out[b, i, h, t + half] = b2 * c + a * s
    return out


def test_frequencies_below_two_pi_over_the_training_length_are_dropped():
    inv_freq = pj.functional.fope_inv_freq(K, train_length=L_TRAIN)
    rope = [10000.0 ** (-2 * t / K) for t in range(K // 2)]
    np.testing.assert_allclose(inv_freq, [w for w in rope if w >= 2 * math.pi / L_TRAIN])
    assert 0 < len(inv_freq) < K // 2


def test_rotation_equals_the_float64_reference(rng):
    """Grouped heads (4 query heads, 2 key heads), offset positions, one layer's seed."""
    fope = pj.encodings.get("fope", train_length=L_TRAIN, gain=0.5, seed=3)
    q = jnp.asarray(rng.normal(size=(2, 5, 4, K)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(2, 5, 2, K)), jnp.float32)
    positions = jnp.asarray([[0, 1, 2, 3, 4], [7, 9, 30, 31, 100]], jnp.int32)
    context = HookContext(positions, positions, layer_index=2)
    q_out, k_out = fope.apply({}, "rotate", q, k, positions, positions, context=context)
    inv_freq = pj.functional.fope_inv_freq(K, train_length=L_TRAIN)
    series = pj.functional.fope_num_series(K, len(inv_freq))
    coefficients = pj.functional.fope_coefficients(2, len(inv_freq), series, gain=0.5, seed=[3, 2])
    positions = np.asarray(positions)
    np.testing.assert_allclose(q_out, _reference(q, positions, inv_freq, *coefficients), atol=2e-5)
    np.testing.assert_allclose(k_out, _reference(k, positions, inv_freq, *coefficients), atol=2e-5)
    # Another layer draws other coefficients.
    other = fope.apply(
        {}, "rotate", q, k, positions, positions, context=context._replace(layer_index=0)
    )
    assert np.abs(np.asarray(other[0]) - np.asarray(q_out)).max() > 1e-3


def _logits(fope, q, k, shift):
    positions = jnp.arange(q.shape[1])[None] + shift
    q_out, k_out = fope.apply({}, "rotate", q, k, positions, positions)
    return np.einsum("blhk,bshk->bhls", q_out, k_out)


def test_without_noise_logits_depend_on_relative_positions_only(rng):
    """gain 0 is RoPE at the kept frequencies (and position-free pairs): shifting every
    position leaves the logits unchanged; the Fourier noise makes them depend on where
    the pair sits, which is what FoPE is."""
    q = jnp.asarray(rng.normal(size=(1, 6, 2, K)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 6, 2, K)), jnp.float32)
    plain = pj.encodings.get("fope", train_length=L_TRAIN, gain=0.0)
    np.testing.assert_allclose(_logits(plain, q, k, 0), _logits(plain, q, k, 37), atol=1e-4)
    noisy = pj.encodings.get("fope", train_length=L_TRAIN, gain=0.5)
    assert np.abs(_logits(noisy, q, k, 0) - _logits(noisy, q, k, 37)).max() > 1e-2


def test_coefficients_are_the_stepped_identity_plus_xavier_noise():
    cos_coefficients, sin_coefficients = pj.functional.fope_coefficients(4, 12, 5, gain=0.0, seed=0)
    expected = np.zeros((4, 12, 5))
    # Step ceil(12 / 5) = 3: series 0..3 take frequencies 0, 3, 6, 9; series 4 none (12).
    expected[:, [0, 3, 6, 9], [0, 1, 2, 3]] = 1.0
    np.testing.assert_array_equal(cos_coefficients, expected)
    np.testing.assert_array_equal(sin_coefficients, expected)
    noisy, _ = pj.functional.fope_coefficients(64, 40, 20, gain=0.3, seed=1)
    std = 0.3 * math.sqrt(2 / (20 * (40 + 64)))
    assert abs(np.std(noisy - np.where(noisy > 0.5, 1.0, 0.0)) / std - 1) < 0.05
