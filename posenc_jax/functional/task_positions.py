"""Positions chosen for the task: the ids Abacus and position coupling give each token.

Both read the positions the task assigns (``task_positions``: each digit's 1-based place in
its own number, counted from the least significant digit; 0 for other tokens), so digits
of equal significance in every number of a problem share one id, and differ in what
they add to them and in what the other tokens get.
"""

import jax.numpy as jnp

from posenc_jax.typing import Array


def abacus_positions(task_positions: Array, offset: Array | int) -> Array:
    """Abacus ids: ``place + offset`` on digits, 0 on every other token.

    Args:
      task_positions: integer ``[..., L]``, a digit's place (>= 1) or 0.
      offset: integer ``k`` (a scalar or broadcastable to ``task_positions``); drawn from
        ``[0, k_max]`` in training and 0 at evaluation.

    Returns:
      int32 ``[..., L]``.

    References:
      McLeish et al., "Transformers Can Do Arithmetic with the Right Embeddings", NeurIPS
      2024, arXiv 2405.17399, Section 3.1.
    """
    task_positions = jnp.asarray(task_positions, jnp.int32)
    return jnp.where(task_positions > 0, task_positions + offset, 0).astype(jnp.int32)


def coupled_positions(task_positions: Array, start: Array | int) -> Array:
    """Position coupling ids: ``start + place``, so that the other tokens (``+``, ``=``)
    get ``start`` and a digit of significance ``i`` (0-based) gets ``start + 1 + i``.

    Args:
      task_positions: integer ``[..., L]``, a digit's place (>= 1) or 0.
      start: integer start id (a scalar or broadcastable, e.g. ``[B, 1]``); drawn per
        example in training and 1 at evaluation.

    Returns:
      int32 ``[..., L]``.

    References:
      Cho et al., "Position Coupling: Improving Length Generalization of Arithmetic
      Transformers Using Task Structure", NeurIPS 2024, arXiv 2405.20671, Section 3.
    """
    return (jnp.asarray(task_positions, jnp.int32) + start).astype(jnp.int32)
