"""Fourier Position Embedding (FoPE): every rotated pair's phase factor a Fourier series.

RoPE turns pair ``t`` of a query or key at position ``n`` by ``(cos w_t n, sin w_t n)``.
FoPE (Hua et al., ICML 2025) replaces these factors, per key/value head ``g``, with Fourier
series over RoPE's frequencies,

    C_g,t(n) = sum_f cos(w_f n) A_g[f, t],      S_g,t(n) = sum_f sin(w_f n) B_g[f, t],

where the frequencies ``w_f`` are RoPE's with every ``w < 2 pi / L_train`` zeroed and
dropped (those never complete a period in training, so their values beyond it are never
learned), and ``A = I + a``, ``B = I + b`` hold the identity (each pair's own frequency)
plus small random coefficients. As in the official code, the coefficients are fixed at
initialization (not trained), each head has its own, the number of series is
``min(F, K / 4)`` (with fewer series than frequencies the identity takes every
``ceil(F / series)``-th frequency), and the pairs beyond the series carry no position:
their factors are ``C = S = 1``.
"""

import math

import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import check_positive_int
from posenc_jax.functional.rope import rope_cos_sin, rope_inv_freq, rotate_pairs
from posenc_jax.typing import Array


def fope_inv_freq(head_dim: int, *, train_length: int, base: float = 10000.0) -> np.ndarray:
    """RoPE's frequencies ``base^(-2t/K)`` for a head of ``K`` features, without those below
    ``2 pi / train_length``: float64 ``[F]``.

    Args:
      head_dim: K, even.
      train_length: L_train, the longest training sequence in tokens.
      base: RoPE's base.

    References:
      Hua et al., "Fourier Position Embedding: Enhancing Attention's Periodic Extension for
      Length Generalization", ICML 2025, arXiv 2412.17739, Section 4 (zeroing the
      insufficiently trained frequencies).
    """
    check_positive_int(train_length, "FoPE train_length")
    inv_freq, _ = rope_inv_freq(head_dim, base=base)
    return inv_freq[inv_freq >= 2 * np.pi / train_length]


def fope_num_series(head_dim: int, num_frequencies: int) -> int:
    """How many pairs carry a Fourier series: ``min(F, K // 4)`` (the official code's
    ``output_dim``)."""
    return min(num_frequencies, head_dim // 4)


def fope_coefficients(
    num_kv_heads: int, num_frequencies: int, num_series: int, *, gain: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed coefficients ``(A, B)``, float64 ``[G, F, T]`` each: identity plus noise.

    The noise is normal with PyTorch's Xavier standard deviation for a ``[G, F, T]`` tensor,
    ``gain * sqrt(2 / (T (F + G)))`` (the official initialization ``eye_xavier_norm``; gain
    0.3 for its 60M model, 0.4 for 180M, 0.6 for 1.2B). The identity maps series ``t`` to
    frequency ``t * ceil(F / T)`` where that is below F (a later series has noise only).

    Args:
      num_kv_heads: G, one set per key/value head.
      num_frequencies: F.
      num_series: T (<= F).
      gain: the noise's Xavier gain; 0 gives RoPE at the kept frequencies.
      seed: the random seed (a layer folds its index into it).
    """
    if not 0 < num_series <= num_frequencies:
        raise ValueError(
            f"FoPE needs 0 < series ({num_series}) <= frequencies ({num_frequencies}); "
            "a larger train_length keeps more frequencies."
        )
    shape = (num_kv_heads, num_frequencies, num_series)
    std = gain * math.sqrt(2.0 / (num_series * (num_frequencies + num_kv_heads)))
    rng = np.random.default_rng(seed)
    step = math.ceil(num_frequencies / num_series)
    identity = np.zeros(shape)
    # A series whose frequency would lie past the last has none (the official step_eye).
    series = np.arange(num_series)[np.arange(num_series) * step < num_frequencies]
    identity[:, series * step, series] = 1.0
    cos_coefficients = identity + std * rng.standard_normal(shape)
    sin_coefficients = identity + std * rng.standard_normal(shape)
    return cos_coefficients, sin_coefficients


def apply_fope(
    x: Array,
    positions: Array,
    inv_freq: np.ndarray,
    cos_coefficients: np.ndarray,
    sin_coefficients: np.ndarray,
) -> Array:
    """Applies FoPE to queries or keys ``x [..., L, H, K]`` (half layout).

    Head ``h`` uses the coefficients of key/value head ``h // (H / G)`` (grouped-query
    attention's sharing). Pair ``t < T`` (features ``t`` and ``t + K/2``) turns by the
    factors ``(C_g,t(n), S_g,t(n))``; the other pairs by ``(1, 1)``.

    Args:
      x: ``[..., L, H, K]``.
      positions: integer ``[..., L]``.
      inv_freq: ``[F]`` from :func:`fope_inv_freq`.
      cos_coefficients: ``A``, ``[G, F, T]`` from :func:`fope_coefficients`.
      sin_coefficients: ``B``, the same shape.

    Returns:
      ``x`` transformed, same shape and dtype.

    References:
      Hua et al., ICML 2025, arXiv 2412.17739, Section 4; the paper's code (OLMo's
      ``FourierEmbedding``, configuration ``fourier_separate_basis``,
      ``fourier_separate_head``, ``fourier_ignore_zero``, ``rope_clamp_floor_to_zero``).
    """
    heads, features = x.shape[-2], x.shape[-1]
    groups = cos_coefficients.shape[0]
    if features % 2 or heads % groups:
        raise ValueError(
            f"FoPE needs an even head dimension and heads ({heads}) a multiple of the "
            f"coefficient sets ({groups}); got x of shape {x.shape}."
        )
    cos, sin = rope_cos_sin(positions, inv_freq)  # [..., L, F]

    def series(values, coefficients):
        coefficients = jnp.asarray(np.repeat(coefficients, heads // groups, axis=0), jnp.float32)
        summed = jnp.einsum("...lf,hft->...lht", values, coefficients)
        padding = features // 2 - summed.shape[-1]
        return jnp.pad(summed, [(0, 0)] * (summed.ndim - 1) + [(0, padding)], constant_values=1.0)

    return rotate_pairs(x, series(cos, cos_coefficients), series(sin, sin_coefficients))
