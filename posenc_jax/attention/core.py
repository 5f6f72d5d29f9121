"""Scaled dot-product attention over explicit positions: checks, the dense path, routing.

Shapes (see ``posenc_jax.typing``): q ``[B, L, H, K]``, k and v ``[B, S, G, K]`` with
``H % G == 0`` (G < H is grouped-query attention, G = 1 multi-query), positions
``[B, L]`` / ``[B, S]``.

Several implementations compute the same function. The dense path materializes the
``[B, H, L, S]`` logits; the chunked path (``posenc_jax.attention.chunked``) computes them
tile by tile with an online softmax and never holds more than one tile; the fused route
(``posenc_jax.attention.fused``) hands attention without a bias or contextual term to
``jax.nn.dot_product_attention``. Which one runs:

* ``implementation="dense"``, ``"chunked"``, ``"jax"`` (``jax.nn.dot_product_attention``'s
  XLA implementation) or ``"cudnn"`` (its cuDNN flash kernel, NVIDIA GPUs) forces it;
* ``implementation="auto"`` (the default) runs cuDNN on an NVIDIA GPU when the call has
  no bias, contextual term, mask or tile size and cuDNN takes its dtype, head dimension
  and lengths (:func:`~posenc_jax.attention.fused.cudnn_unsupported`). Otherwise it runs
  chunked when a ``block_size`` is given, or when ``L * S`` exceeds
  :data:`DENSE_MAX_LOGITS`, and dense below. An encoding with a ``contextual``
  term needs the full map, so "auto" always runs it dense.
"""

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from posenc_jax._checks import as_batched_positions
from posenc_jax.encodings.base import Contextual
from posenc_jax.typing import Array, BiasFn

IMPLEMENTATIONS = ("auto", "dense", "chunked", "jax", "cudnn")

# Sorts after every position a key can have (positions are int32).
_NO_KEY = jnp.iinfo(jnp.int32).max

#: "auto" runs dense while ``L * S`` is at most this and chunked beyond it. On CPU the
#: chunked path is already faster from L = 512 (causal ALiBi attention at B = 8, H = 8,
#: K = 32: 0.08 s vs 0.12 s forward), and a Transformer evaluation at L = 2048 runs 2-10x
#: faster chunked (experiments/benchmarks/attention.py); short sequences, which fit one
#: tile, gain nothing from it and compile faster dense.
DENSE_MAX_LOGITS = 512 * 512

#: Tile edges the chunked path picks from when none is given: the largest whose float32
#: logits ``[B, H, edge, edge]`` take at most :data:`TILE_BYTES` (the smallest otherwise).
BLOCK_SIZES = (256, 128)

#: About what one tile of logits may take. Measured on CPU with 8 heads: training at
#: L = 1024, batch 4, a step with ALiBi took 0.89 s with tiles of 128 (2 MiB) and 1.06-1.10 s
#: with 256 (8 MiB); evaluating at L = 16,384, batch 1, 9.9 s with 256 (2 MiB) and 12.1 s
#: with 128 (experiments/benchmarks/NOTES.md).
TILE_BYTES = 2 * 2**20


def default_block_size(batch: int, num_heads: int) -> int:
    """The chunked path's tile edge for ``batch`` rows of ``num_heads`` heads."""
    for edge in BLOCK_SIZES:
        if 4 * batch * num_heads * edge * edge <= TILE_BYTES:
            return edge
    return BLOCK_SIZES[-1]


#: ``temperature(q_positions [B, L], num_keys [B, L]) -> [B, L]`` float32 factor
#: multiplying each query's logit row, ``num_keys`` the number of keys each query may
#: attend (see ``posenc_jax.attention.temperature`` and :func:`attendable_keys`).
TemperatureFn = Callable[[Array, Array], Array]


def check_qkv(q: Array, k: Array, v: Array) -> None:
    """Trace-time contract of q/k/v shapes and dtypes, with messages that say what to fix."""
    chex.assert_rank(
        [q, k, v], 4, custom_message="q, k and v must be [B, L, H, K], [B, S, G, K], [B, S, G, K]"
    )
    chex.assert_equal_shape([k, v], custom_message="k and v must have the same shape [B, S, G, K]")
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
) -> Array | None:
    """Boolean ``[B, 1 or H, L, S]`` of attendable (query, key) pairs, or None for all.

    Causality is defined by positions: query i may attend key j when
    ``k_position[j] <= q_position[i]``. With ``arange`` positions this is the usual lower
    triangle; with a decoding cache or left padding it is still right, because positions
    are data. ``padding_mask [B, S]`` (False on padded keys) hides padded keys from every
    query.
    """
    allowed = None
    if causal:
        allowed = k_positions[:, None, None, :] <= q_positions[:, None, :, None]
    for extra in (mask, None if padding_mask is None else padding_mask[:, None, None, :]):
        if extra is not None:
            allowed = extra if allowed is None else jnp.logical_and(allowed, extra)
    return allowed


def attendable_keys(
    q_positions: Array, k_positions: Array, *, causal: bool, padding_mask: Array | None
) -> Array:
    """How many keys each query may attend, by causality and padding: float32 ``[B, L]``.

    A causal query counts the real keys at or before its position (a cache's empty slots
    and padded keys are not keys); a bidirectional one counts every real key. Computed from
    sorted key positions in ``O((L + S) log S)``, so it costs no ``[L, S]`` map. A mask
    passed to attention beyond causality and padding is not counted.
    """
    batch, k_len = k_positions.shape
    if padding_mask is None:
        padding_mask = jnp.ones((batch, k_len), jnp.bool_)
    if not causal:
        count = jnp.sum(padding_mask, axis=-1, keepdims=True)
        return jnp.broadcast_to(count, q_positions.shape).astype(jnp.float32)
    # Padded keys sort after every real one and are never counted.
    sorted_keys = jnp.sort(
        jnp.where(padding_mask, k_positions, _NO_KEY),
        axis=-1,
    )
    real = jnp.sum(padding_mask, axis=-1, keepdims=True)
    found = jax.vmap(lambda keys, queries: jnp.searchsorted(keys, queries, side="right"))(
        sorted_keys, q_positions
    )
    return jnp.minimum(found, real).astype(jnp.float32)


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


def check_padding_mask(padding_mask: Array | None, batch: int, k_len: int) -> None:
    """A padding mask must be boolean ``[B, S]``."""
    if padding_mask is None:
        return
    if padding_mask.shape != (batch, k_len) or padding_mask.dtype != jnp.bool_:
        raise ValueError(
            f"padding_mask is {padding_mask.dtype}{list(padding_mask.shape)}; it must be "
            f"boolean [B, S] = [{batch}, {k_len}] (False on padded keys)."
        )


def masked_softmax(logits: Array, allowed: Array | None) -> Array:
    """Softmax over the last axis in float32; a row with nothing allowed gives zeros.

    No -inf enters the computation, so values and gradients stay finite even for fully
    masked rows (padding queries, the first rows of a windowed mask).
    """
    logits = logits.astype(jnp.float32)
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


def choose_implementation(
    implementation: str,
    *,
    block_size: int | None,
    q_len: int,
    k_len: int,
    has_contextual: bool,
    batch: int,
    num_heads: int,
    has_bias: bool = False,
    has_mask: bool = False,
    dtype: jnp.dtype = jnp.float32,
    head_dim: int = 64,
    cudnn: bool | None = None,
) -> tuple[str, int | None]:
    """Resolves (path, block size) from the caller's request; the path is "dense",
    "chunked", "jax" or "cudnn". A chunked run without a block size gets
    :func:`default_block_size` of ``batch`` and ``num_heads``. ``cudnn`` says whether
    the device runs cuDNN's flash attention (default: asked of the device, only when
    cuDNN is in question, :func:`~posenc_jax.attention.fused.cudnn_available`).

    Raises:
      ValueError: for an unknown implementation, a non-positive block size, a block size
        with a path that takes none, chunked attention requested with a contextual term,
        the fused route ("jax", "cudnn") requested with a bias, contextual term or mask,
        or "cudnn" requested where it cannot run these inputs.
    """
    # Imported here because the fused module builds on this module's helpers.
    from posenc_jax.attention.fused import cudnn_unsupported

    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}.")
    if block_size is not None and (not isinstance(block_size, int) or block_size <= 0):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}.")
    if implementation in ("dense", "jax", "cudnn") and block_size is not None:
        raise ValueError(
            f"block_size={block_size} asks for tiles but implementation={implementation!r}; "
            "pass block_size=None, or implementation='chunked'."
        )

    def why_not_cudnn() -> str | None:
        return cudnn_unsupported(dtype, head_dim, q_len, k_len, available=cudnn)

    if implementation in ("jax", "cudnn"):
        extra = [
            name
            for name, present in (
                ("a position bias", has_bias),
                ("a contextual term", has_contextual),
                ("a mask", has_mask),
            )
            if present
        ]
        if extra:
            raise ValueError(
                f"implementation={implementation!r} runs jax.nn.dot_product_attention on "
                f"plain or causal attention, but this call has {' and '.join(extra)}; use "
                "'auto', 'dense' or 'chunked'."
            )
        reason = why_not_cudnn() if implementation == "cudnn" else None
        if reason:
            raise ValueError(f"implementation='cudnn': {reason}; use 'auto' or 'jax'.")
        return implementation, None
    if implementation == "dense":
        return "dense", None
    wants_chunked = implementation == "chunked" or block_size is not None
    if has_contextual:
        if wants_chunked:
            raise ValueError(
                "this encoding's contextual term needs the full [B, H, L, S] logit map "
                "(needs_dense), so it cannot run chunked; use implementation='dense' or "
                "'auto' with block_size=None."
            )
        return "dense", None
    if not (wants_chunked or has_bias or has_mask or why_not_cudnn()):
        return "cudnn", None
    if wants_chunked or q_len * k_len > DENSE_MAX_LOGITS:
        return "chunked", block_size or default_block_size(batch, num_heads)
    return "dense", None


def dot_product_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    bias_fn: BiasFn | None = None,
    mask: Array | None = None,
    causal: bool = False,
    q_positions: Array | None = None,
    k_positions: Array | None = None,
    block_size: int | None = None,
    scale: float | None = None,
    contextual: Contextual | None = None,
    temperature: TemperatureFn | None = None,
    implementation: str = "auto",
    padding_mask: Array | None = None,
) -> Array:
    """Multi-head attention ``softmax(tau * (q k^T * scale + bias)) v`` with positions as data.

    Args:
      q: queries ``[B, L, H, K]``.
      k: keys ``[B, S, G, K]``; ``H`` must be a multiple of ``G``.
      v: values ``[B, S, G, K]``.
      bias_fn: ``bias_fn(q_positions, k_positions)`` returning ``[H, L, S]`` or
        ``[B, H, L, S]``, added to the scaled logits. The chunked path calls it once per
        tile with that tile's positions.
      mask: boolean, broadcastable to ``[B, H, L, S]``; True where a query may attend.
      causal: also forbid keys whose position is after the query's position.
      q_positions: integer ``[B, L]`` or ``[L]``; default ``arange(L)``.
      k_positions: integer ``[B, S]`` or ``[S]``; default ``arange(S)``.
      block_size: tile edge of the chunked path; giving one asks for chunked attention.
      scale: logit scale, a number or a traced scalar; default ``1 / sqrt(K)``.
      contextual: an encoding's content-dependent terms (dense only), see
        :class:`posenc_jax.encodings.base.Contextual`.
      temperature: ``temperature(q_positions, num_keys) -> [B, L]``, a factor ``tau``
        multiplying each query's whole logit row (e.g. an
        :class:`~posenc_jax.attention.temperature.AttentionTemperature`); ``num_keys
        [B, L]`` counts the keys each query may attend (:func:`attendable_keys`).
      implementation: "auto", "dense", "chunked", "jax" or "cudnn" (see the module
        docstring).
      padding_mask: boolean ``[B, S]``, False on padded keys: no query attends them and
        the temperature does not count them.

    Returns:
      ``[B, L, H, K]`` in q's dtype. A query row with no attendable key returns zeros.

    Raises:
      ValueError: for inconsistent shapes, a bad mask, a contextual term built for the
        other direction (``Contextual.causal``), chunked attention requested
        together with a contextual term, "jax" / "cudnn" requested with a bias, contextual
        term or mask, or "cudnn" where it cannot run.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (Eq. 1); Ainslie et al.,
      "GQA", EMNLP 2023; Milakov & Gimelshein, "Online normalizer calculation for softmax",
      2018, and Rabe & Staats, "Self-attention Does Not Need O(n^2) Memory", 2021 (chunked).
    """
    check_qkv(q, k, v)
    batch, q_len, num_heads, head_dim = q.shape
    k_len = k.shape[1]
    check_mask(mask, batch, num_heads, q_len, k_len)
    check_padding_mask(padding_mask, batch, k_len)
    if contextual is not None and contextual.causal not in (None, causal):
        raise ValueError(
            f"the contextual term was built for causal={contextual.causal} attention, but "
            f"this call has causal={causal}; build it (the encoding's contextual hook) with "
            "the attention's direction."
        )
    q_positions = as_batched_positions(q_positions, batch, q_len, "q_positions")
    k_positions = as_batched_positions(k_positions, batch, k_len, "k_positions")
    scale = head_dim**-0.5 if scale is None else scale
    path, block_size = choose_implementation(
        implementation,
        block_size=block_size,
        q_len=q_len,
        k_len=k_len,
        has_contextual=contextual is not None,
        batch=batch,
        num_heads=num_heads,
        has_bias=bias_fn is not None,
        has_mask=mask is not None or padding_mask is not None,
        dtype=q.dtype,
        head_dim=head_dim,
    )
    logit_factor = None
    if temperature is not None:
        num_keys = attendable_keys(
            q_positions, k_positions, causal=causal, padding_mask=padding_mask
        )
        logit_factor = checked_logit_factor(temperature(q_positions, num_keys), (batch, q_len))

    shared = {
        "causal": causal,
        "q_positions": q_positions,
        "k_positions": k_positions,
        "scale": scale,
        "logit_factor": logit_factor,
    }
    # Imported here because these modules build on this module's helpers.
    if path == "chunked":
        from posenc_jax.attention.chunked import chunked_attention

        return chunked_attention(
            q,
            k,
            v,
            bias_fn=bias_fn,
            mask=mask,
            padding_mask=padding_mask,
            block_size=block_size,
            **shared,
        )
    if path in ("jax", "cudnn"):
        from posenc_jax.attention.fused import fused_attention

        return fused_attention(q, k, v, implementation=path, **shared)

    allowed = allowed_mask(
        q_positions, k_positions, mask=mask, causal=causal, padding_mask=padding_mask
    )
    logits = dense_logits(
        q,
        k,
        scale=scale,
        q_positions=q_positions,
        k_positions=k_positions,
        allowed=allowed,
        bias_fn=bias_fn,
        contextual=contextual,
    )
    if logit_factor is not None:
        logits = logits * logit_factor[:, None, :, None]
    weights = masked_softmax(logits, allowed)
    out = jnp.swapaxes(weighted_values(weights, v), 1, 2)
    if contextual is not None and contextual.values is not None:
        out = out + contextual.values(weights, q_positions, k_positions)
    return out.astype(q.dtype)


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
) -> Array:
    """The full float32 logit map ``[B, H, L, S]``: ``q.k * scale``, the encoding's bias
    and its contextual terms (which see the ``allowed`` mask), before any masking."""
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
    return logits


def checked_logit_factor(factor: Array, expected: tuple[int, int]) -> Array:
    factor = jnp.asarray(factor, jnp.float32)
    if factor.shape != expected:
        raise ValueError(
            f"temperature returned shape {factor.shape}; expected [B, L] = {list(expected)}."
        )
    return factor
