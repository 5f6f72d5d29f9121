"""The key/value cache of autoregressive decoding, as pure functions of its arrays.

A causal self-attention layer that decodes keeps four arrays (:class:`KVCache`): its
cached keys and values, their positions and how many tokens were written. Both skins of
:class:`~posenc_jax.attention.MultiHeadAttention` (linen's "cache" collection, NNX's
``nnx.Cache`` variables, under the same names) create them with :func:`empty_cache` and
change them only through :func:`append` (or :func:`append_streaming`), so the cache's
rules live here once.

Positions are data: the cache offset is nothing but the positions passed in, and an empty
slot holds :data:`EMPTY_CACHE_POSITION`, later than any query, so the causal rule hides it
without a separate validity mask. A windowed layer keeps only the last ``window.size``
keys, in a ring buffer whose cached positions say what is where. A StreamingLLM cache
(:class:`Streaming`) keeps the first tokens and the latest ones, and places them by
positions counted inside the cache.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from posenc_jax._checks import is_integer
from posenc_jax.attention.ops import Window
from posenc_jax.typing import Array

#: Position of a cache slot not yet written: later than any query, so the causal rule
#: (key position <= query position) hides it without a separate validity mask.
EMPTY_CACHE_POSITION = 2**30


class KVCache(NamedTuple):
    """The arrays of one layer's cache.

    Attributes:
      key: ``[B, C, G, K]`` cached keys (C slots), as the encoding's ``rotate`` left them.
      value: ``[B, C, G, Kv]`` cached values (``Kv = K`` unless ``rotate`` widens keys).
      positions: int32 ``[B, C]``, the position of each slot's key
        (:data:`EMPTY_CACHE_POSITION` when empty).
      index: int32 scalar, how many tokens were written so far.
    """

    key: Array
    value: Array
    positions: Array
    index: Array


#: The variables' names, in both skins ("cache" collection in linen, attributes in NNX).
CACHE_NAMES = KVCache("cached_key", "cached_value", "cached_positions", "cache_index")


def cache_capacity(length: int, window: Window | None, streaming: "Streaming | None" = None) -> int:
    """Slots a cache needs for sequences of ``length`` tokens: ``length``, the window's
    size for a windowed layer (a ring buffer), or a StreamingLLM cache's
    ``sinks + recent``."""
    if streaming is not None:
        return streaming.capacity
    return length if window is None else window.size


def empty_cache(
    batch_size: int,
    capacity: int,
    num_kv_heads: int,
    head_dim: int,
    dtype,
    *,
    value_dim: int | None = None,
) -> KVCache:
    """A cache with ``capacity`` empty slots for ``[B, ., G, K]`` keys of ``dtype`` (and
    values of ``value_dim`` features; default ``K``)."""
    shape = (batch_size, capacity, num_kv_heads, head_dim)
    value_shape = shape[:3] + (head_dim if value_dim is None else value_dim,)
    return KVCache(
        key=jnp.zeros(shape, dtype),
        value=jnp.zeros(value_shape, dtype),
        positions=jnp.full(shape[:2], EMPTY_CACHE_POSITION, jnp.int32),
        index=jnp.zeros((), jnp.int32),
    )


def append(
    cache: KVCache, k: Array, v: Array, k_positions: Array, window: Window | None
) -> tuple[tuple[Array, Array, Array], KVCache]:
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

    Returns:
      ``((keys, values, positions), new_cache)``.

    Raises:
      ValueError: a full cache given more new tokens than it has slots.
    """
    length = k.shape[1]
    capacity = cache.key.shape[1]
    start = cache.index
    index = start + length
    if window is not None:
        attended = (
            jnp.concatenate([cache.key, k], axis=1),
            jnp.concatenate([cache.value, v], axis=1),
            jnp.concatenate([cache.positions, k_positions], axis=1),
        )
        kept = min(length, capacity)
        slots = (start + length - kept + jnp.arange(kept)) % capacity
        updated = KVCache(
            key=cache.key.at[:, slots].set(k[:, length - kept :]),
            value=cache.value.at[:, slots].set(v[:, length - kept :]),
            positions=cache.positions.at[:, slots].set(k_positions[:, length - kept :]),
            index=index,
        )
        return attended, updated
    if length > capacity:
        raise ValueError(f"{length} new tokens do not fit a cache of {capacity} positions.")
    updated = KVCache(
        key=jax.lax.dynamic_update_slice_in_dim(cache.key, k, start, axis=1),
        value=jax.lax.dynamic_update_slice_in_dim(cache.value, v, start, axis=1),
        positions=jax.lax.dynamic_update_slice_in_dim(cache.positions, k_positions, start, axis=1),
        index=index,
    )
    return (updated.key, updated.value, updated.positions), updated


class Streaming(NamedTuple):
    """StreamingLLM's cache: the first ``sinks`` tokens and the ``recent`` latest ones.

    Decoding far beyond the trained length, the cache keeps the first ``sinks`` tokens (the
    "attention sinks", which softmax attention leans on) and a rolling window of the
    ``recent`` latest tokens (the current one included); every other token is evicted.
    Positions are counted inside the cache, not in the text: the kept keys are stored
    before the encoding's ``rotate`` and take positions ``0 .. n - 1`` in their order,
    the current token the last, so no position ever exceeds ``sinks + recent - 1``.

    Attributes:
      sinks: k, the first tokens kept (4 in the paper).
      recent: the rolling window's size, the current token included.

    References:
      Xiao, Tian, Chen, Han, Lewis, "Efficient Streaming Language Models with Attention
      Sinks", ICLR 2024, arXiv 2309.17453, Section 3.2.
    """

    sinks: int
    recent: int

    @property
    def capacity(self) -> int:
        return self.sinks + self.recent

    def check(self) -> None:
        """``sinks >= 0`` and ``recent >= 1``, integers."""
        for name, low in (("sinks", 0), ("recent", 1)):
            value = getattr(self, name)
            if not is_integer(value) or value < low:
                raise ValueError(f"Streaming {name} must be an integer >= {low}, got {value!r}.")


def append_streaming(
    cache: KVCache, k: Array, v: Array, k_positions: Array, streaming: Streaming
) -> tuple[tuple[Array, Array, Array], KVCache]:
    """Writes a call's keys into a StreamingLLM cache and returns the whole cache.

    The i-th token ever written goes to slot ``i`` while ``i < sinks`` and to slot
    ``sinks + (i - sinks) mod recent`` after, overwriting the oldest recent token; the
    call then attends every kept token (its own included). A call of several tokens is
    the same as feeding them one by one when none of them evicts a token (a prefill
    that fits); past that, feed one token per call.

    Args:
      cache: the layer's cache, ``sinks + recent`` slots.
      k: this call's keys ``[B, l, G, K]``, not rotated.
      v: its values.
      k_positions: int32 ``[B, l]``, the tokens' positions in the text.
      streaming: the policy.

    Returns:
      ``((keys, values, positions), new_cache)``: the cache after writing, positions in
      the text (:data:`EMPTY_CACHE_POSITION` on empty slots).
    """
    tokens = cache.index + jnp.arange(k.shape[1])
    recent = jnp.maximum(tokens - streaming.sinks, 0) % streaming.recent
    slots = jnp.where(tokens < streaming.sinks, tokens, streaming.sinks + recent)
    updated = KVCache(
        key=cache.key.at[:, slots].set(k),
        value=cache.value.at[:, slots].set(v),
        positions=cache.positions.at[:, slots].set(k_positions),
        index=cache.index + k.shape[1],
    )
    return (updated.key, updated.value, updated.positions), updated


def positions_in_cache(cached_positions: Array, positions: Array) -> Array:
    """Each token's position counted inside the cache: how many kept tokens precede it.

    Args:
      cached_positions: int32 ``[B, C]``, the kept tokens' positions in the text
        (:data:`EMPTY_CACHE_POSITION` on empty slots).
      positions: int32 ``[B, l]``, positions in the text of the tokens to place.

    Returns:
      int32 ``[B, l]``; :data:`EMPTY_CACHE_POSITION` where ``positions`` is one (an empty
      slot stays later than every query).
    """
    kept = cached_positions != EMPTY_CACHE_POSITION
    earlier = kept[:, None, :] & (cached_positions[:, None, :] < positions[:, :, None])
    counted = jnp.sum(earlier, axis=-1).astype(jnp.int32)
    return jnp.where(positions == EMPTY_CACHE_POSITION, EMPTY_CACHE_POSITION, counted)
