"""The binary-counter picture of the sinusoidal encoding.

Writing 0, 1, 2, ... in binary, the lowest bit flips at every step, the next every second
step, the next every fourth: each bit is a square wave whose period doubles from one bit to
the next. The sinusoidal encoding (Vaswani et al. 2017) is the continuous analogue: channel
pair ``t`` is a sine/cosine wave of period ``2 pi base^(2t/D)``, fastest first, the periods
growing geometrically. Unlike bits, the waves are smooth and bounded, and a shift by ``k``
is a rotation of each pair (see :mod:`posenc_jax.analysis.relative_shift`).
"""

import numpy as np


def binary_counter(num_positions: int, num_bits: int) -> np.ndarray:
    """The bits of ``0 .. num_positions - 1``, lowest (fastest-flipping) bit first.

    Args:
      num_positions: how many integers, at most ``2**num_bits``.
      num_bits: how many bits per integer.

    Returns:
      int ``[num_positions, num_bits]`` of 0/1; column ``b`` is bit ``b`` (period ``2^(b+1)``).

    Raises:
      ValueError: for non-positive sizes or more positions than ``num_bits`` bits can count.
    """
    if num_positions <= 0 or num_bits <= 0:
        raise ValueError(
            f"num_positions ({num_positions}) and num_bits ({num_bits}) must be positive."
        )
    if num_positions > 2**num_bits:
        raise ValueError(
            f"{num_bits} bits count only up to {2**num_bits - 1}; num_positions={num_positions} "
            f"needs at least {int(np.ceil(np.log2(num_positions)))} bits."
        )
    positions = np.arange(num_positions)[:, None]
    return (positions >> np.arange(num_bits)[None, :]) & 1
