"""The key/value cache of autoregressive decoding, as pure functions of its arrays.

A causal self-attention layer that decodes keeps four arrays (:class:`KVCache`): its
cached keys and values, their positions and how many tokens were written; a layer whose
encoding has a ``decay`` hook (a forget gate) keeps a fifth, each cached key's cumulative
log decay ``c``, from which the next tokens continue the sum. Both skins of
:class:`~posenc_jax.attention.MultiHeadAttention` (linen's "cache" collection, NNX's
``nnx.Cache`` variables, under the same names) create them with :func:`empty_cache` and
change them only through :func:`append`, so the cache's rules live here once.

Positions are data: the cache offset is nothing but the positions passed in, and an empty
slot holds :data:`EMPTY_CACHE_POSITION`, later than any query, so the causal rule hides it
without a separate validity mask. A windowed layer keeps only the last ``window.size``
keys, in a ring buffer whose cached positions say what is where.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from posenc_jax.attention.ops import Window
from posenc_jax.typing import Array

#: Position of a cache slot not yet written: later than any query, so the causal rule
#: (key position <= query position) hides it without a separate validity mask.
EMPTY_CACHE_POSITION = 2**30


class KVCache(NamedTuple):
    """The arrays of one layer's cache.

    Attributes:
      key: ``[B, C, G, K]`` cached keys (C slots).
      value: ``[B, C, G, K]`` cached values.
      positions: int32 ``[B, C]``, the position of each slot's key
        (:data:`EMPTY_CACHE_POSITION` when empty).
      index: int32 scalar, how many tokens were written so far.
      decay: float32 ``[B, C, H]``, each cached key's cumulative log decay ``c_j``
        (:func:`posenc_jax.functional.cumulative_log_decay`), or None for a layer
        without a decay term.
    """

    key: Array
    value: Array
    positions: Array
    index: Array
    decay: Array | None = None


#: The variables' names, in both skins ("cache" collection in linen, attributes in NNX).
CACHE_NAMES = KVCache(
    "cached_key", "cached_value", "cached_positions", "cache_index", "cached_decay"
)


def named_arrays(state: KVCache) -> dict[str, Array]:
    """The cache's arrays by variable name (:data:`CACHE_NAMES`), without an absent decay."""
    return {
        name: value for name, value in zip(CACHE_NAMES, state, strict=True) if value is not None
    }


def from_named(read) -> KVCache:
    """A :class:`KVCache` from ``read(name)``, the skin's variable of that name or None."""
    return KVCache(*(read(name) for name in CACHE_NAMES))


class Attended(NamedTuple):
    """What a call attends: the cached and new keys, values, positions and, with a decay
    term, the keys' cumulative log decays ``[B, S, H]`` (else None)."""

    key: Array
    value: Array
    positions: Array
    decay: Array | None = None


def cache_capacity(length: int, window: Window | None) -> int:
    """Slots a cache needs for sequences of ``length`` tokens: ``length``, or the window's
    size for a windowed layer (a ring buffer)."""
    return length if window is None else window.size


def empty_cache(
    batch_size: int,
    capacity: int,
    num_kv_heads: int,
    head_dim: int,
    dtype,
    *,
    decay_heads: int | None = None,
) -> KVCache:
    """A cache with ``capacity`` empty slots for ``[B, ., G, K]`` keys of ``dtype``, and
    with ``decay_heads`` (H) cumulative log decays per slot when given."""
    shape = (batch_size, capacity, num_kv_heads, head_dim)
    decay = None
    if decay_heads is not None:
        decay = jnp.zeros((batch_size, capacity, decay_heads), jnp.float32)
    return KVCache(
        key=jnp.zeros(shape, dtype),
        value=jnp.zeros(shape, dtype),
        positions=jnp.full(shape[:2], EMPTY_CACHE_POSITION, jnp.int32),
        index=jnp.zeros((), jnp.int32),
        decay=decay,
    )


def decay_total(cache: KVCache) -> Array:
    """``[B, H]``: the cumulative log decay of the last token written (0 before any), from
    which the next tokens' sums continue. The last token sits at slot ``(index - 1) mod
    C`` in a full cache and in a ring buffer alike."""
    last = jnp.take(cache.decay, (cache.index - 1) % cache.decay.shape[1], axis=1)
    return jnp.where(cache.index > 0, last, 0.0)


def append(
    cache: KVCache,
    k: Array,
    v: Array,
    k_positions: Array,
    window: Window | None,
    *,
    decay: Array | None = None,
) -> tuple[Attended, KVCache]:
    """The keys, values and positions a call attends, and the cache with its keys written.

    A full cache writes the call's keys at the cache index and the call attends the whole
    cache. A windowed layer's cache is a ring buffer of ``window.size`` slots: the call
    attends the ring as it was plus its own keys, then its last ``window.size`` keys are
    written at slots ``index mod size`` (positions are data, so where a key sits does not
    matter).

    Args:
      cache: the layer's cache.
      k: this call's keys ``[B, l, G, K]`` (already rotated).
      v: this call's values ``[B, l, G, K]``.
      k_positions: int32 ``[B, l]``.
      window: the layer's window, or None.
      decay: float32 ``[B, l, H]``, the new keys' cumulative log decays (continued from
        :func:`decay_total`), for a cache that keeps them; else None.

    Returns:
      ``(attended, new_cache)``: an :class:`Attended` and the updated :class:`KVCache`.

    Raises:
      ValueError: a full cache given more new tokens than it has slots, or a decay given
        to a cache without one (or the reverse).
    """
    if (decay is None) != (cache.decay is None):
        kept = "keeps no" if cache.decay is None else "keeps"
        given = "gives" if decay is not None else "gives no"
        raise ValueError(
            f"the cache {kept} cumulative log decays but the call {given} decays; make the "
            "cache with the layer's encoding (an encoding with a decay hook needs them)."
        )
    new = Attended(k, v, k_positions, decay)
    cached = Attended(cache.key, cache.value, cache.positions, cache.decay)
    length = k.shape[1]
    capacity = cache.key.shape[1]
    start = cache.index
    index = start + length
    if window is not None:
        attended = jax.tree.map(lambda old, x: jnp.concatenate([old, x], axis=1), cached, new)
        kept = min(length, capacity)
        slots = (start + length - kept + jnp.arange(kept)) % capacity
        written = jax.tree.map(
            lambda old, x: old.at[:, slots].set(x[:, length - kept :]), cached, new
        )
        return attended, KVCache(*written[:3], index, written.decay)
    if length > capacity:
        raise ValueError(f"{length} new tokens do not fit a cache of {capacity} positions.")
    written = jax.tree.map(
        lambda old, x: jax.lax.dynamic_update_slice_in_dim(old, x, start, axis=1), cached, new
    )
    return written, KVCache(*written[:3], index, written.decay)
