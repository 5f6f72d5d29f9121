"""KERPLE: kernelized relative positional biases (Chi, Fan, Ramadge and Rudnicky, 2022)."""

import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import is_concrete
from posenc_jax.functional.distance import absolute_distance, per_head
from posenc_jax.typing import Array


def _per_head_kernel_inputs(r1, r2, q_positions, k_positions, *, variant, r2_max=np.inf):
    """``(r1, r2, |i - j|)`` broadcast against each other as ``[..., H, L, S]``, after
    checking known parameters (``0 < r1``, ``0 < r2 <= r2_max``): outside, the kernel is
    not conditionally positive definite and the log variant's bias is NaN. The encodings
    clamp their trained parameters into range first; traced values are not checked."""
    for name, value, high in (("r1", r1, np.inf), ("r2", r2, r2_max)):
        if is_concrete(value):
            values = np.asarray(value, np.float64)
            if not np.all((values > 0) & (values <= high)):
                bound = "> 0" if high == np.inf else f"in (0, {high:g}]"
                raise ValueError(f"KERPLE {variant} {name} must be {bound}, got {values}.")
    distance = absolute_distance(q_positions, k_positions)
    r1 = per_head(jnp.asarray(r1, jnp.float32), distance)
    r2 = per_head(jnp.asarray(r2, jnp.float32), distance)
    return r1, r2, distance[..., None, :, :]


def kerple_log_bias(r1: Array, r2: Array, q_positions: Array, k_positions: Array) -> Array:
    """The logarithmic KERPLE bias ``-r1_h log(1 + r2_h |i - j|)``.

    Args:
      r1: positive per-head scale ``[H]``.
      r2: positive per-head rate ``[H]``.
      q_positions: integer ``[..., L]``.
      k_positions: integer ``[..., S]``.

    Returns:
      float32 ``[..., H, L, S]``, added to the logits after the ``1/sqrt(d)`` scaling.
      The paper's kernel uses ``|m - n|``, so the bias is symmetric and finite above the
      diagonal (masked in causal attention).

    References:
      Chi, Fan, Ramadge and Rudnicky, "KERPLE: Kernelized Relative Positional Embedding for
      Length Extrapolation", NeurIPS 2022, Section 4 (logarithmic variant).
    """
    r1, r2, distance = _per_head_kernel_inputs(r1, r2, q_positions, k_positions, variant="log")
    return -r1 * jnp.log1p(r2 * distance)


def kerple_power_bias(r1: Array, r2: Array, q_positions: Array, k_positions: Array) -> Array:
    """The power KERPLE bias ``-r1_h |i - j|^r2_h``, with ``0 < r2_h <= 2``.

    Args:
      r1: positive per-head scale ``[H]``.
      r2: per-head exponent ``[H]`` in ``(0, 2]`` (the kernel is conditionally positive
        definite only there).
      q_positions: integer ``[..., L]``.
      k_positions: integer ``[..., S]``.

    Returns:
      float32 ``[..., H, L, S]``, added to the logits after the ``1/sqrt(d)`` scaling. At
      distance 0 the bias is 0 and its gradient with respect to ``r2`` is 0 (not NaN).

    References:
      Chi, Fan, Ramadge and Rudnicky, "KERPLE: Kernelized Relative Positional Embedding for
      Length Extrapolation", NeurIPS 2022, Section 4 (power variant).
    """
    r1, r2, distance = _per_head_kernel_inputs(
        r1, r2, q_positions, k_positions, variant="power", r2_max=2.0
    )
    # d^r2 = exp(r2 log d); the d = 0 entries go through log(1) so that neither the value
    # nor the gradient with respect to r2 meets 0 * log(0).
    nonzero = distance > 0
    powered = jnp.exp(r2 * jnp.log(jnp.where(nonzero, distance, 1.0)))
    return -r1 * jnp.where(nonzero, powered, 0.0)
