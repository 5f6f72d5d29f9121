"""T5's bucketed relative positions (Raffel et al., 2020)."""

import functools
import math

import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import is_integer
from posenc_jax.typing import Array


def t5_relative_bucket(
    relative_position: Array,
    *,
    bidirectional: bool,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> Array:
    """The T5 bucket of each relative position ``j - i`` (key minus query), int32.

    With ``n`` the distance to a key before the query (``n = i - j``; keys after the query
    count as ``n = 0`` when causal), distances ``n < max_exact`` get a bucket each and
    larger ones share logarithmically wider buckets,
    ``max_exact + floor((B - max_exact) log(n / max_exact) / log(max_distance / max_exact))``,
    until the last bucket, which takes every ``n`` beyond about ``max_distance``. Here
    ``B = num_buckets`` and ``max_exact = B // 2``; when bidirectional, each side gets
    ``B // 2`` buckets (so ``max_exact = B // 4``) and keys after the query use the upper
    half.

    The logarithm is evaluated once per bucket boundary, in exact integer arithmetic, and
    each distance is compared with the boundaries. This is the same function as T5's
    float32 formula, but it cannot put a distance that lies exactly on a boundary (such as
    ``n = 16`` for 16 buckets per side) on the wrong side through rounding.

    Args:
      relative_position: integer array of any shape: key position minus query position.
      bidirectional: True for encoder self-attention, False for causal attention.
      num_buckets: total number of buckets B (at least 2, or 4 when bidirectional).
      max_distance: distance from which everything falls in the last bucket; larger than
        ``max_exact``.

    Returns:
      int32 buckets in ``[0, num_buckets)``, same shape as ``relative_position``.

    References:
      Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
      Transformer", JMLR 2020, Section 2.1; T5 / t5x ``_relative_position_bucket``.
    """
    relative_position = jnp.asarray(relative_position)
    if not jnp.issubdtype(relative_position.dtype, jnp.integer):
        raise ValueError(
            f"relative_position must be an integer array, got dtype {relative_position.dtype}."
        )
    if not isinstance(bidirectional, bool | np.bool_):
        raise ValueError(
            f"bidirectional must be True (encoder) or False (causal decoder), got "
            f"{bidirectional!r}."
        )
    per_side = num_buckets // 2 if bidirectional else num_buckets
    max_exact = per_side // 2
    starts = _log_bucket_starts(_checked(num_buckets, per_side, max_distance, bidirectional))
    relative_position = relative_position.astype(jnp.int32)
    if bidirectional:
        offset = jnp.where(relative_position > 0, per_side, 0)
        distance = jnp.abs(relative_position)
    else:
        offset = 0
        distance = jnp.maximum(-relative_position, 0)
    log_bucket = max_exact + jnp.searchsorted(
        jnp.asarray(starts), distance, side="right", method="compare_all"
    ).astype(jnp.int32)
    return offset + jnp.where(distance < max_exact, distance, log_bucket)


def _checked(num_buckets, per_side, max_distance, bidirectional) -> tuple[int, int, int]:
    """Validates the bucket layout; returns ``(max_exact, log_buckets, max_distance)``."""
    for name, value in (("num_buckets", num_buckets), ("max_distance", max_distance)):
        if not is_integer(value):
            raise ValueError(f"t5 {name} must be an integer, got {value!r}.")
    if per_side < 2:
        need = 4 if bidirectional else 2
        raise ValueError(
            f"t5 num_buckets={num_buckets} is too small for bidirectional={bidirectional}; "
            f"use at least {need}."
        )
    max_exact = per_side // 2
    if max_distance <= max_exact:
        raise ValueError(
            f"t5 max_distance={max_distance} must exceed the {max_exact} exact buckets "
            f"(num_buckets={num_buckets}, bidirectional={bidirectional})."
        )
    return int(max_exact), int(per_side - max_exact), int(max_distance)


@functools.lru_cache(maxsize=64)
def _log_bucket_starts(layout: tuple[int, int, int]) -> np.ndarray:
    """First distance of each logarithmic bucket after the first, int32 ``[log_buckets - 1]``.

    Bucket ``max_exact + k`` starts at the smallest n with
    ``log(n / max_exact) / log(max_distance / max_exact) >= k / log_buckets``, i.e.
    ``n^log_buckets * max_exact^k >= max_distance^k * max_exact^log_buckets``, which Python
    integers decide exactly.
    """
    max_exact, log_buckets, max_distance = layout
    starts = []
    for k in range(1, log_buckets):
        estimate = max_exact * (max_distance / max_exact) ** (k / log_buckets)
        n = max(max_exact, math.floor(estimate) - 2)
        while n**log_buckets * max_exact**k < max_distance**k * max_exact**log_buckets:
            n += 1
        starts.append(n)
    return np.asarray(starts, np.int32)
