"""The operations every attention backend shares: checks, masks, logits, softmax, values.

Shapes (see ``posenc_jax.typing``): q ``[B, L, H, K]``, k and v ``[B, S, G, K]`` with
``H % G == 0`` (G < H is grouped-query attention, G = 1 multi-query), positions
``[B, L]`` / ``[B, S]``. The backends (``dense``, ``chunked``, ``fused``) build on these and
on nothing of each other's but what they say they reuse; ``router`` picks among them.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp

from posenc_jax._checks import is_integer
from posenc_jax.encodings.base import Contextual
from posenc_jax.typing import Array, BiasFn

# Sorts after every position a key can have (positions are int32).
_NO_KEY = jnp.iinfo(jnp.int32).max

WINDOW_KINDS = ("sliding", "chunked")


@dataclasses.dataclass(frozen=True)
class Window:
    """Which keys a query at position p may attend besides causality, by positions.

    * ``"sliding"``: keys at positions ``p - size < q <= p`` in causal attention (the
      query and the ``size - 1`` before it), ``|p - q| < size`` bidirectionally (Mistral /
      Gemma's sliding-window attention; Longformer's local attention).
    * ``"chunked"``: keys in the same block of ``size`` positions, ``q // size == p //
      size`` (and ``q <= p`` when causal): Llama 4's chunked local attention.

    Attributes:
      size: w, a positive integer.
      kind: "sliding" or "chunked".

    References:
      Beltagy et al., "Longformer", 2020 (sliding windows); Jiang et al., "Mistral 7B",
      2023; Meta, Llama 4 (``attention_chunk_size``, Hugging Face ``modeling_llama4``).
    """

    size: int
    kind: str = "sliding"

    def __post_init__(self):
        if not is_integer(self.size) or self.size <= 0:
            raise ValueError(f"window size must be a positive integer, got {self.size!r}.")
        if self.kind not in WINDOW_KINDS:
            raise ValueError(f"window kind={self.kind!r}; valid: {', '.join(WINDOW_KINDS)}.")
        object.__setattr__(self, "size", int(self.size))

    def allows(self, q_positions: Array, k_positions: Array, *, causal: bool) -> Array:
        """Whether each (query, key) pair of broadcastable positions is inside the window
        (causality itself is not part of it)."""
        if self.kind == "sliding":
            distance = q_positions - k_positions
            if causal:
                return distance < self.size
            return jnp.abs(distance) < self.size
        return q_positions // self.size == k_positions // self.size


def as_window(window: "Window | int | None") -> "Window | None":
    """A :class:`Window` from a window or a sliding-window size (None: no window)."""
    if window is None or isinstance(window, Window):
        return window
    return Window(window)


def check_qkv(q: Array, k: Array, v: Array) -> None:
    """Trace-time contract of q/k/v shapes and dtypes, with messages that say what to fix.

    Values may be narrower or wider than queries and keys (``v [B, S, G, Kv]``): an
    encoding's ``rotate`` may widen queries and keys (PoPE doubles them).
    """
    chex.assert_rank(
        [q, k, v], 4, custom_message="q, k and v must be [B, L, H, K], [B, S, G, K], [B, S, G, Kv]"
    )
    chex.assert_equal_shape_prefix(
        [k, v],
        3,
        custom_message="k and v must share [B, S, G] (values may have their own K)",
    )
    chex.assert_equal_shape_prefix([q, k], 1, custom_message="q and k must have the same batch B")
    chex.assert_equal_shape_suffix(
        [q, k], 1, custom_message="q and k must have the same head dim K"
    )
    chex.assert_equal(
        q.dtype, k.dtype, custom_message=f"q is {q.dtype} but k is {k.dtype}; cast them to one"
    )
    chex.assert_equal(
        k.dtype, v.dtype, custom_message=f"k is {k.dtype} but v is {v.dtype}; cast them to one"
    )
    num_heads, num_kv_heads = q.shape[2], k.shape[2]
    if num_heads % num_kv_heads:
        raise ValueError(
            f"q has {num_heads} heads and k/v have {num_kv_heads}; the number of query heads "
            "must be a multiple of the number of key/value heads."
        )


def allowed_mask(
    q_positions: Array,
    k_positions: Array,
    *,
    mask: Array | None,
    causal: bool,
    padding_mask: Array | None = None,
    window: "Window | None" = None,
) -> Array | None:
    """Boolean ``[B, 1 or H, L, S]`` of attendable (query, key) pairs, or None for all.

    Causality is defined by positions: query i may attend key j when
    ``k_position[j] <= q_position[i]``. With ``arange`` positions this is the usual lower
    triangle; with a decoding cache or left padding it is still right, because positions
    are data. ``padding_mask [B, S]`` (False on padded keys) hides padded keys from every
    query, and a ``window`` keeps only the keys it lets in (by positions too).
    """
    allowed = position_mask(q_positions, k_positions, causal=causal, window=window)
    for extra in (mask, None if padding_mask is None else padding_mask[:, None, None, :]):
        if extra is not None:
            allowed = extra if allowed is None else jnp.logical_and(allowed, extra)
    return allowed


def position_mask(
    q_positions: Array, k_positions: Array, *, causal: bool, window: "Window | None"
) -> Array | None:
    """``[B, 1, L, S]`` pairs allowed by causality and the window, from positions; None
    when both allow every pair."""
    allowed = None
    q = q_positions[:, None, :, None]
    k = k_positions[:, None, None, :]
    if causal:
        allowed = k <= q
    if window is not None:
        inside = window.allows(q, k, causal=causal)
        allowed = inside if allowed is None else jnp.logical_and(allowed, inside)
    return allowed


def positions_follow_indices(q_positions: Array, k_positions: Array) -> Array:
    """Scalar bool: queries and keys share one strictly increasing sequence per row, so
    ``k_position[j] <= q_position[i]`` holds exactly when ``j <= i``."""
    if q_positions.shape != k_positions.shape:
        return jnp.asarray(False)
    shared = jnp.all(q_positions == k_positions)
    increasing = jnp.all(q_positions[:, 1:] > q_positions[:, :-1])
    return jnp.logical_and(shared, increasing)


def attendable_keys(
    q_positions: Array,
    k_positions: Array,
    *,
    causal: bool,
    padding_mask: Array | None,
    window: "Window | None" = None,
) -> Array:
    """How many keys each query may attend, by causality, padding and the window:
    float32 ``[B, L]``.

    A causal query counts the real keys at or before its position (a cache's empty slots
    and padded keys are not keys); a bidirectional one counts every real key; a window
    keeps the keys in its range. Computed from sorted key positions in
    ``O((L + S) log S)``, so it costs no ``[L, S]`` map. A mask passed to attention beyond
    these is not counted.
    """
    batch, k_len = k_positions.shape
    if padding_mask is None:
        padding_mask = jnp.ones((batch, k_len), jnp.bool_)
    real = jnp.sum(padding_mask, axis=-1, keepdims=True)
    low, high = _key_range(q_positions, causal=causal, window=window)
    if low is None and high is None:
        return jnp.broadcast_to(real, q_positions.shape).astype(jnp.float32)
    # Padded keys sort after every real one and are never counted.
    sorted_keys = jnp.sort(jnp.where(padding_mask, k_positions, _NO_KEY), axis=-1)

    def at_most(bound):  # real keys with position <= bound, per query
        found = jax.vmap(lambda keys, b: jnp.searchsorted(keys, b, side="right"))(
            sorted_keys, bound
        )
        return jnp.minimum(found, real)

    count = real if high is None else at_most(high)
    if low is not None:
        count = count - at_most(low)
    return jnp.broadcast_to(count, q_positions.shape).astype(jnp.float32)


def _key_range(q_positions: Array, *, causal: bool, window: "Window | None"):
    """``(low, high)``: each query attends keys with ``low < position <= high`` (None: no
    bound on that side)."""
    low = high = None
    if causal:
        high = q_positions
    if window is None:
        return low, high
    q = q_positions.astype(jnp.int32)
    if window.kind == "sliding":
        low = q - window.size
        if not causal:
            high = q + window.size - 1
    else:
        start = (q // window.size) * window.size
        low = start - 1
        if not causal:
            high = start + window.size - 1
    return low, high


def check_mask(mask: Array | None, batch: int, heads: int, q_len: int, k_len: int) -> None:
    """A mask must be boolean and broadcastable to ``[B, H, L, S]``."""
    if mask is None:
        return
    target = (batch, heads, q_len, k_len)
    ok = mask.ndim == 4 and all(m in (1, t) for m, t in zip(mask.shape, target, strict=True))
    if not ok:
        raise ValueError(
            f"mask has shape {mask.shape}; it must be rank 4 and broadcastable to "
            f"[B, H, L, S] = {list(target)} (use 1 for a broadcast axis)."
        )
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask must be boolean (True = attend), got dtype {mask.dtype}.")


def check_separable_bias(separable_bias, batch: int, heads: int, q_len: int, k_len: int):
    """A separable bias is a pair of float arrays ``u [B, H, L]`` and ``w [B, H, S]``."""
    if separable_bias is None:
        return
    u, w = separable_bias
    if jnp.shape(u) != (batch, heads, q_len) or jnp.shape(w) != (batch, heads, k_len):
        raise ValueError(
            f"separable_bias has shapes {jnp.shape(u)} and {jnp.shape(w)}; expected "
            f"u [B, H, L] = {[batch, heads, q_len]} and w [B, H, S] = {[batch, heads, k_len]}."
        )


def check_sink_logits(sink_logits, heads: int) -> None:
    """Sink logits are one float per query head, ``[H]``."""
    if sink_logits is not None and jnp.shape(sink_logits) != (heads,):
        raise ValueError(
            f"sink_logits has shape {jnp.shape(sink_logits)}; expected one logit per query "
            f"head, [H] = [{heads}]."
        )


def check_padding_mask(padding_mask: Array | None, batch: int, k_len: int) -> None:
    """A padding mask must be boolean ``[B, S]``."""
    if padding_mask is None:
        return
    if padding_mask.shape != (batch, k_len) or padding_mask.dtype != jnp.bool_:
        raise ValueError(
            f"padding_mask is {padding_mask.dtype}{list(padding_mask.shape)}; it must be "
            f"boolean [B, S] = [{batch}, {k_len}] (False on padded keys)."
        )


def masked_softmax(logits: Array, allowed: Array | None, sink_logits: Array | None = None) -> Array:
    """Softmax over the last axis in float32; a row with nothing allowed gives zeros.

    No -inf enters the computation, so values and gradients stay finite even for fully
    masked rows (padding queries, the first rows of a windowed mask).

    Args:
      logits: ``[B, H, L, S]``.
      allowed: boolean, broadcastable to ``logits``, or None for every entry.
      sink_logits: ``[H]``, one more logit per head in every row's normalizer, whose value
        is zero (an attention sink): the weights are ``exp(z_j) / (exp(s_h) + sum_l
        exp(z_l))`` and sum to less than 1; a row with nothing allowed puts all its weight
        on the sink. None: a plain softmax.
    """
    logits = logits.astype(jnp.float32)
    if sink_logits is not None:
        sink = jnp.broadcast_to(
            jnp.asarray(sink_logits, jnp.float32)[None, :, None, None],
            logits.shape[:-1] + (1,),
        )
        if allowed is None:
            allowed = jnp.ones((1, 1, 1, 1), jnp.bool_)
        allowed = jnp.broadcast_to(allowed, logits.shape)
        with_sink = jnp.concatenate([logits, sink], axis=-1)
        allowed = jnp.concatenate([allowed, jnp.ones_like(sink, jnp.bool_)], axis=-1)
        return _softmax_of_allowed(with_sink, allowed)[..., :-1]
    if allowed is None:
        return jax.nn.softmax(logits, axis=-1)
    return _softmax_of_allowed(logits, allowed)


@jax.custom_jvp
def _softmax_of_allowed(logits: Array, allowed: Array) -> Array:
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    unnormalized = jnp.exp(logits - row_max) * allowed
    total = jnp.sum(unnormalized, axis=-1, keepdims=True)
    return unnormalized / jnp.where(total > 0, total, 1.0)


@_softmax_of_allowed.defjvp
def _softmax_of_allowed_jvp(primals, tangents):
    """``dp = p (dz - sum_j p_j dz_j)``, zero where nothing is allowed.

    Written out so that reverse mode (its transpose) needs only the weights ``p``: XLA's
    derivative of the masked expression above keeps and re-reads several ``[B, H, L, S]``
    intermediates, about 25% of dense attention's forward + backward time at L = 256.
    """
    logits, allowed = primals
    weights = _softmax_of_allowed(logits, allowed)
    d_logits = tangents[0]
    d_weights = weights * (d_logits - jnp.sum(weights * d_logits, axis=-1, keepdims=True))
    return weights, d_weights


def grouped_logits(q: Array, k: Array, *, head_major: bool = False) -> Array:
    """``q.k`` for every head in float32 ``[B, H, L, S]``; k has G <= H heads (GQA).

    Query head ``h`` reads key/value head ``h // (H // G)``, so consecutive query heads share
    a key head, as in Ainslie et al. (2023). Inputs are ``q [B, L, H, K]``, ``k [B, S, G, K]``,
    or with ``head_major`` ``q [B, H, L, K]``, ``k [B, G, S, K]`` (the chunked path's tiles).
    """
    head_axis = 1 if head_major else 2
    q_spec, k_spec = ("BGRLK", "BGSK") if head_major else ("BLGRK", "BSGK")
    q = q.reshape(grouped_shape(q.shape, k.shape[head_axis], head_axis))
    logits = jnp.einsum(f"{q_spec},{k_spec}->BGRLS", q, k, preferred_element_type=jnp.float32)
    return _merged_heads(logits)


def weighted_values(weights: Array, v: Array, *, head_major: bool = False) -> Array:
    """``sum_j weights[..., j] v_j`` in float32 ``[B, H, L, K]`` for ``weights [B, H, L, S]``
    and ``v [B, S, G, K]`` (or ``[B, G, S, K]`` with ``head_major``)."""
    v_spec = "BGSK" if head_major else "BSGK"
    weights = weights.reshape(grouped_shape(weights.shape, v.shape[1 if head_major else 2], 1))
    out = jnp.einsum(
        f"BGRLS,{v_spec}->BGRLK", weights.astype(v.dtype), v, preferred_element_type=jnp.float32
    )
    return _merged_heads(out)


def grouped_shape(shape: tuple[int, ...], num_kv_heads: int, head_axis: int) -> tuple:
    """``shape`` with its H axis split into ``(G, H // G)``."""
    heads = shape[head_axis]
    return shape[:head_axis] + (num_kv_heads, heads // num_kv_heads) + shape[head_axis + 1 :]


def _merged_heads(x: Array) -> Array:
    """``[B, G, R, ...]`` -> ``[B, G * R, ...]``."""
    return x.reshape(x.shape[:1] + (x.shape[1] * x.shape[2],) + x.shape[3:])


def checked_bias(bias: Array, logits_shape: tuple[int, ...]) -> Array:
    """Accepts ``[H, L, S]`` or ``[B, H, L, S]`` biases; returns a float32 rank-4 bias."""
    if bias.ndim == 3:
        bias = bias[None]
    if (
        bias.ndim != 4
        or bias.shape[1:] != tuple(logits_shape[1:])
        or bias.shape[0]
        not in (
            1,
            logits_shape[0],
        )
    ):
        raise ValueError(
            f"bias_fn returned shape {bias.shape}; expected [H, L, S] or [B, H, L, S] with "
            f"[B, H, L, S] = {list(logits_shape)}."
        )
    return bias.astype(jnp.float32)


def dense_logits(
    q: Array,
    k: Array,
    *,
    scale: float,
    q_positions: Array,
    k_positions: Array,
    allowed: Array | None,
    bias_fn: BiasFn | None = None,
    contextual: Contextual | None = None,
    separable_bias: tuple[Array, Array] | None = None,
) -> Array:
    """The full float32 logit map ``[B, H, L, S]``: ``q.k * scale`` and the encoding's
    bias, its contextual terms (which see those logits and the ``allowed`` mask, as
    :class:`~posenc_jax.encodings.base.Contextual` says: CoPE's gates are content), then
    the per-token separable bias ``u_i - w_j``; before any masking."""
    logits = grouped_logits(q, k) * scale
    if bias_fn is not None:
        logits = logits + checked_bias(bias_fn(q_positions, k_positions), logits.shape)
    if contextual is not None:
        k_per_head = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2)
        adjusted = contextual.logits(
            logits, q, k_per_head, q_positions, k_positions, allowed, scale
        )
        if adjusted.shape != logits.shape:
            raise ValueError(
                f"contextual logits returned shape {adjusted.shape}; expected "
                f"[B, H, L, S] = {list(logits.shape)}."
            )
        logits = adjusted.astype(jnp.float32)
    if separable_bias is not None:
        u, w = separable_bias
        logits = logits + u.astype(jnp.float32)[..., :, None] - w.astype(jnp.float32)[..., None, :]
    return logits


def checked_logit_factor(factor: Array, expected: tuple[int, int]) -> Array:
    factor = jnp.asarray(factor, jnp.float32)
    if factor.shape != expected:
        raise ValueError(
            f"temperature returned shape {factor.shape}; expected [B, L] = {list(expected)}."
        )
    return factor


def temperature_factor(
    temperature,
    q_positions: Array,
    k_positions: Array,
    *,
    causal: bool,
    padding_mask: Array | None,
    window: Window | None,
) -> Array:
    """The per-query factor ``[B, L]`` of a temperature for the keys each query may attend
    (:func:`attendable_keys`)."""
    num_keys = attendable_keys(
        q_positions, k_positions, causal=causal, padding_mask=padding_mask, window=window
    )
    return checked_logit_factor(temperature(q_positions, num_keys), q_positions.shape)
