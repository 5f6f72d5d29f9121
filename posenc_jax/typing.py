"""Shared type aliases and the one dimension key used across the package.

Dimension key (einsum strings and variable names use it):

  B batch, L query length, S key length, H heads, G key/value heads, R heads per key/value
  head (H // G), K head dim, D model dim, V vocabulary size.

Positions are integer arrays: ``positions [B, L]`` (a single ``[L]`` row broadcasts over
the batch). Nothing in the package assumes ``positions == arange(L)``.
"""

from collections.abc import Callable

import jax

Array = jax.Array

#: ``bias_fn(q_positions [..., L], k_positions [..., S]) -> bias [..., H, L, S]``; called
#: once for the dense path and once per (query block, key block) tile for the chunked path.
BiasFn = Callable[[Array, Array], Array]
