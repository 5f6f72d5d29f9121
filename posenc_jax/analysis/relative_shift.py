"""Relative position is a linear map of the sinusoidal encoding.

For every offset ``k`` there is one matrix ``M_k``, the same for every position ``t``, with
``PE(t + k) = M_k PE(t)``: by the angle-addition formulas each (sin, cos) pair of frequency
``w`` turns by the angle ``w k``,

    [sin w(t+k)]   [ cos wk   sin wk] [sin wt]
    [cos w(t+k)] = [-sin wk   cos wk] [cos wt],

so ``M_k`` is block-diagonal with these rotations (Vaswani et al. 2017, Section 3.5: "for any
fixed offset k, PE_{pos+k} can be represented as a linear function of PE_{pos}").

:func:`fit_shift_maps` recovers each block by least squares from the encodings alone and
compares it with the closed form. The fit is done pair by pair: a fit of the full
``D x D`` matrix is numerically non-identifiable from a few hundred positions, because the
lowest frequencies barely move there (``sin wt ~ wt`` and ``cos wt ~ 1`` for several
``w`` at once), which makes their columns nearly collinear in float32.
"""

from collections.abc import Sequence
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from posenc_jax.functional.sinusoidal import sinusoidal, sinusoidal_inv_freq


class ShiftFit(NamedTuple):
    """Least-squares shift maps of the sinusoidal encoding against the closed form.

    Attributes:
      fitted: float64 ``[len(offsets), D, D]``, the block-diagonal ``M_k`` fitted from the
        encodings (zero outside the 2x2 blocks).
      closed_form: float64 ``[len(offsets), D, D]``, the rotations of :func:`shift_rotation`.
      fit_error: ``max |fitted - closed_form|`` over every offset and entry.
      residual: ``max |PE(t + k) - M_k PE(t)|`` over every position ``t``, offset ``k`` and
        channel, with the closed-form ``M_k``: how far from exact the identity is for the
        float32 encoding.
    """

    fitted: np.ndarray
    closed_form: np.ndarray
    fit_error: float
    residual: float


def shift_rotation(dim: int, offset: int, *, base: float = 10000.0) -> np.ndarray:
    """The closed-form ``M_k`` with ``PE(t + k) = M_k PE(t)`` for the interleaved layout.

    Args:
      dim: the encoding width D (even).
      offset: the shift k (any integer; negative shifts are the inverse rotations).
      base: the sinusoid base.

    Returns:
      float64 ``[D, D]``, block-diagonal with ``[[cos wk, sin wk], [-sin wk, cos wk]]`` for
      each frequency ``w`` of :func:`posenc_jax.functional.sinusoidal_inv_freq` (the
      float64 values the encoding itself starts from, so that the map is exact for it).

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Section 3.5.
    """
    inv_freq = np.asarray(sinusoidal_inv_freq(dim, base=base), np.float64)
    angles = inv_freq * offset
    matrix = np.zeros((dim, dim))
    pairs = np.arange(dim // 2)
    matrix[2 * pairs, 2 * pairs] = np.cos(angles)
    matrix[2 * pairs, 2 * pairs + 1] = np.sin(angles)
    matrix[2 * pairs + 1, 2 * pairs] = -np.sin(angles)
    matrix[2 * pairs + 1, 2 * pairs + 1] = np.cos(angles)
    return matrix


def fit_shift_maps(
    dim: int,
    offsets: Sequence[int],
    *,
    num_positions: int = 256,
    base: float = 10000.0,
) -> ShiftFit:
    """Fits ``M_k`` from the encodings by least squares, for every offset k.

    For each offset and each frequency pair, the 2x2 block ``B`` minimizing
    ``sum_t |PE_pair(t + k) - B PE_pair(t)|^2`` over positions ``t = 0 .. num_positions - 1``
    is solved in float64 from the package's float32 encodings. That one block fits every
    ``t`` (a small fit error) is the claim that the shift is linear and independent of t.

    Args:
      dim: the encoding width D (even).
      offsets: the shifts k, non-negative integers.
      num_positions: positions t used by the fit (at least 2).
      base: the sinusoid base.

    Returns:
      A :class:`ShiftFit`.

    Raises:
      ValueError: for a negative offset or fewer than 2 positions.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Section 3.5.
    """
    offsets = [int(k) for k in offsets]
    if not offsets or min(offsets) < 0:
        raise ValueError(f"offsets must be a non-empty list of integers >= 0, got {offsets}.")
    if num_positions < 2:
        raise ValueError(
            f"num_positions must be at least 2 to fit a 2x2 block, got {num_positions}."
        )
    table = np.asarray(
        sinusoidal(jnp.arange(num_positions + max(offsets), dtype=jnp.int32), dim, base=base),
        np.float64,
    )
    fitted = np.zeros((len(offsets), dim, dim))
    closed_form = np.stack([shift_rotation(dim, k, base=base) for k in offsets])
    residual = 0.0
    for index, k in enumerate(offsets):
        now, shifted = table[:num_positions], table[k : k + num_positions]
        for pair in range(dim // 2):
            block = slice(2 * pair, 2 * pair + 2)
            # lstsq solves now @ X = shifted, i.e. shifted_row = X^T now_row.
            solution, *_ = np.linalg.lstsq(now[:, block], shifted[:, block], rcond=None)
            fitted[index, block, block] = solution.T
        predicted = np.einsum("ij,tj->ti", closed_form[index], now)
        residual = max(residual, float(np.max(np.abs(shifted - predicted))))
    return ShiftFit(
        fitted=fitted,
        closed_form=closed_form,
        fit_error=float(np.max(np.abs(fitted - closed_form))),
        residual=residual,
    )
