"""Long-term decay of RoPE: how ``sum_t exp(i m theta_t)`` shrinks with the distance m.

Writing a rotated query-key product in complex form (Su et al. 2021, Section 3.4.3),
``q_m . k_n = Re[sum_t h_t exp(i (m - n) theta_t)]`` with ``h_t`` the product of the pair
``t`` of the query and the conjugated pair of the key. When the ``h_t`` are similar, the
size of the logit is governed by ``|sum_t exp(i m theta_t)|`` at relative distance m, and by
Abel summation it is bounded by ``max_t |h_{t+1} - h_t| * sum_j |S_j|`` with partial sums
``S_j = sum_{t < j} exp(i m theta_t)``, the max running over t = 0 .. P - 1 with RoFormer's
convention ``h_P = 0`` (without that last term the bound fails: a constant h gives 0).
With the standard schedule ``theta_t = 10000^(-2t/d)`` both shrink as m grows (with
ripples), so distant tokens get smaller logits on average.

The continuous form replaces the sum over pairs by an integral over ``s = 2t/d`` in
``[0, 1]``: ``int_0^1 exp(i m theta(s)) ds``. With ``theta(s) = 10000^(-s)`` it decays;
with ``theta(s) = s`` it is ``(exp(i m) - 1) / (i m)``, of magnitude
``|sin(m/2) / (m/2)|``: it oscillates and returns to zero at every ``m = 2 pi n``, so a
schedule has to spread its frequencies over orders of magnitude for the logits to decay.

Every function takes the frequencies as an array, so the scaled schedules of the RoPE
scaling methods (``posenc_jax.functional.rope_inv_freq(..., scaling=...)``) plug in as they
are. The distances may be fractional (a continuous curve).
"""

from collections.abc import Callable

import numpy as np

# Distances are processed in chunks so that [chunk, pairs] complex arrays stay small.
_CHUNK = 256
# The integral is refused when the phase m * theta moves more than this between two
# quadrature points: Simpson's rule is then no longer accurate.
_MAX_PHASE_STEP = 0.5


def _phases(distances, inv_freq) -> tuple[np.ndarray, np.ndarray]:
    distances = np.asarray(distances, np.float64)
    inv_freq = np.asarray(inv_freq, np.float64)
    if distances.ndim != 1 or inv_freq.ndim != 1 or inv_freq.size == 0:
        raise ValueError(
            f"distances and inv_freq must be non-empty 1-D arrays, got shapes "
            f"{distances.shape} and {inv_freq.shape}."
        )
    if not (np.all(np.isfinite(distances)) and np.all(np.isfinite(inv_freq))):
        raise ValueError("distances and inv_freq must be finite numbers.")
    return distances, inv_freq


def _schedule_on_grid(schedule: Callable[[np.ndarray], np.ndarray], num_points: int):
    """``theta(s)`` at ``num_points`` evenly spaced ``s`` in [0, 1], float64, checked."""
    grid = np.linspace(0.0, 1.0, num_points)
    theta = np.asarray(schedule(grid), np.float64)
    if theta.shape != grid.shape or not np.all(np.isfinite(theta)):
        raise ValueError(
            f"schedule must map s [{num_points}] to finite theta(s) of the same shape, got "
            f"shape {theta.shape}."
        )
    return theta


def _chunked(distances: np.ndarray, per_chunk: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    pieces = [per_chunk(distances[i : i + _CHUNK]) for i in range(0, distances.size, _CHUNK)]
    return np.concatenate(pieces) if pieces else np.zeros((0,))


def rope_decay(distances, inv_freq) -> np.ndarray:
    """``|(1/P) sum_t exp(i m theta_t)|`` for each relative distance m; 1 at m = 0.

    Args:
      distances: relative distances m ``[M]`` (float or integer).
      inv_freq: the rotation frequencies ``theta_t`` ``[P]`` (radians per position), e.g.
        ``posenc_jax.functional.rope_inv_freq(128)[0]``.

    Returns:
      float64 ``[M]`` in ``[0, 1]``.

    References:
      Su, Lu, Pan, Murtadha, Wen, Liu, "RoFormer: Enhanced Transformer with Rotary Position
      Embedding", arXiv 2104.09864, 2021, Section 3.4.3.
    """
    distances, inv_freq = _phases(distances, inv_freq)
    return _chunked(
        distances, lambda m: np.abs(np.mean(np.exp(1j * np.outer(m, inv_freq)), axis=-1))
    )


def rope_decay_bound(distances, inv_freq) -> np.ndarray:
    """Su's relative upper bound ``(1/P) sum_{j=1..P} |S_j|``, partial sums ``S_j``.

    ``S_j = sum_{t<j} exp(i m theta_t)``, the sum over the j fastest pairs.

    The logit's bound is ``max_t |h_{t+1} - h_t|`` (with ``h_P = 0``) times ``sum_j |S_j|``;
    this is the second factor averaged over the P pairs, the quantity plotted in RoFormer's
    Figure 2. It is ``(P + 1) / 2`` at m = 0.

    Args:
      distances: relative distances m ``[M]``.
      inv_freq: frequencies ``theta_t`` ``[P]``.

    Returns:
      float64 ``[M]``.

    References:
      Su et al., "RoFormer", arXiv 2104.09864, 2021, Section 3.4.3 and Figure 2.
    """
    distances, inv_freq = _phases(distances, inv_freq)

    def bound(m):
        partial_sums = np.cumsum(np.exp(1j * np.outer(m, inv_freq)), axis=-1)
        return np.mean(np.abs(partial_sums), axis=-1)

    return _chunked(distances, bound)


def rope_decay_integral(
    distances, schedule: Callable[[np.ndarray], np.ndarray], *, num_points: int = 8193
) -> np.ndarray:
    """``|int_0^1 exp(i m theta(s)) ds|`` by Simpson's rule, the continuous form of the sum.

    Args:
      distances: relative distances m ``[M]``.
      schedule: ``theta(s)`` for an array of ``s`` in ``[0, 1]``, e.g.
        ``lambda s: 10000.0 ** -s`` (RoPE) or ``lambda s: s``.
      num_points: quadrature points, odd and at least 3.

    Returns:
      float64 ``[M]``; 1 at m = 0.

    Raises:
      ValueError: for an even or too small ``num_points``, a schedule that does not return
        finite values of the right shape, or distances so large that the phase moves more
        than 0.5 rad between quadrature points (the message gives the points needed).

    References:
      Su et al., "RoFormer", arXiv 2104.09864, 2021, Section 3.4.3 (the decay of the sum
      with theta_t = 10000^(-2t/d)); the integral form is its limit as the number of pairs
      grows.
    """
    if num_points < 3 or num_points % 2 == 0:
        raise ValueError(
            f"num_points must be odd and at least 3 for Simpson's rule, got {num_points}."
        )
    theta = _schedule_on_grid(schedule, num_points)
    distances, theta = _phases(distances, theta)
    largest = np.max(np.abs(distances))
    phase_step = largest * np.max(np.abs(np.diff(theta)))
    if phase_step > _MAX_PHASE_STEP:
        # A first guess from a linear schedule, then the smallest odd count (to 1%) that
        # the check accepts, since a curved schedule's largest step shrinks more slowly.
        intervals = int(np.ceil((num_points - 1) * phase_step / _MAX_PHASE_STEP))
        needed = intervals + intervals % 2 + 1
        for _ in range(200):  # up to ~7x the first guess
            step = largest * np.max(np.abs(np.diff(_schedule_on_grid(schedule, needed))))
            if step <= _MAX_PHASE_STEP:
                break
            needed += 2 * max(1, needed // 100)
        else:  # the step does not shrink with the spacing: theta(s) jumps
            raise ValueError(
                f"the phase m * theta(s) jumps by {step:.3g} rad between neighbouring "
                f"quadrature points however many there are (a discontinuous schedule?); "
                "integrate each continuous piece separately or use smaller distances."
            )
        raise ValueError(
            f"the phase m * theta(s) moves {phase_step:.3g} rad between quadrature points at "
            f"the largest distance; use num_points >= {needed} (odd) or smaller distances."
        )
    weights = np.ones(num_points)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    weights /= 3.0 * (num_points - 1)
    return _chunked(distances, lambda m: np.abs(np.exp(1j * np.outer(m, theta)) @ weights))
