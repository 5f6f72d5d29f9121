"""The key/value cache of autoregressive decoding, as pure functions of its arrays.

A causal self-attention layer that decodes keeps four arrays (:class:`KVCache`): its
cached keys and values, their positions and how many tokens were written; a layer whose
encoding has a ``decay`` hook (a forget gate) keeps a fifth, each cached key's cumulative
log decay ``c``, from which the next tokens continue the sum. Both skins of
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

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from posenc_jax._checks import check_values, is_integer
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
    decay_heads: int | None = None,
) -> KVCache:
    """A cache with ``capacity`` empty slots for ``[B, ., G, K]`` keys of ``dtype`` (and
    values of ``value_dim`` features; default ``K``), and with ``decay_heads`` (H)
    cumulative log decays per slot when given."""
    shape = (batch_size, capacity, num_kv_heads, head_dim)
    value_shape = shape[:3] + (head_dim if value_dim is None else value_dim,)
    decay = None
    if decay_heads is not None:
        decay = jnp.zeros((batch_size, capacity, decay_heads), jnp.float32)
    return KVCache(
        key=jnp.zeros(shape, dtype),
        value=jnp.zeros(value_shape, dtype),
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
      ValueError: the call's keys do not fit a full cache's free slots, or a position
        reaches the empty-slot marker: at trace time when the cache index is known, else
        when the computation runs (a write past the end would overwrite the last slot, as
        ``dynamic_update_slice`` clamps its start); or a decay given to a cache without
        one (or the reverse).
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
    check_values(
        functools.partial(_cache_write_is_bad, length, None if window is not None else capacity),
        functools.partial(_explain_cache_write, length, capacity),
        start,
        jnp.max(k_positions),
    )
    if window is not None:
        attended = jax.tree.map(lambda old, x: jnp.concatenate([old, x], axis=1), cached, new)
        kept = min(length, capacity)
        slots = (start + length - kept + jnp.arange(kept)) % capacity
        written = jax.tree.map(
            lambda old, x: old.at[:, slots].set(x[:, length - kept :]), cached, new
        )
        return attended, KVCache(*written[:3], index, written.decay)
    written = jax.tree.map(
        lambda old, x: jax.lax.dynamic_update_slice_in_dim(old, x, start, axis=1), cached, new
    )
    return written, KVCache(*written[:3], index, written.decay)


def _cache_write_is_bad(length: int, room: int | None, start, last_position):
    """Whether ``length`` keys written at slot ``start`` overrun a cache of ``room`` slots
    (None: a ring buffer, which has no end), or a position reaches the empty-slot marker."""
    past_the_end = False if room is None else start + length > room
    return (last_position >= EMPTY_CACHE_POSITION) | past_the_end


def _explain_cache_write(length: int, room: int, start, last_position) -> str:
    if last_position >= EMPTY_CACHE_POSITION:
        return (
            f"decoding with a key/value cache takes positions below {EMPTY_CACHE_POSITION} "
            f"(2**30 marks an empty slot), got {int(last_position)}; offset the positions "
            "(relative encodings see only their differences)."
        )
    return (
        f"the key/value cache holds {room} positions and {int(start)} are written; "
        f"{length} more do not fit. Initialize the cache with at least "
        f"{int(start) + length} positions (the first call, or init_cache's max_length)."
    )


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
) -> tuple[Attended, KVCache]:
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
      ``(attended, new_cache)``: an :class:`Attended` holding the cache after writing,
      positions in the text (:data:`EMPTY_CACHE_POSITION` on empty slots), and the
      updated :class:`KVCache`. It keeps no cumulative log decays (the layer refuses a
      decay term with streaming).
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
    return Attended(updated.key, updated.value, updated.positions), updated


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
