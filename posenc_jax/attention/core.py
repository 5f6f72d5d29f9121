"""Scaled dot-product attention over explicit positions: the one entry point.

Shapes (see ``posenc_jax.typing``): q ``[B, L, H, K]``, k and v ``[B, S, G, K]`` with
``H % G == 0`` (G < H is grouped-query attention, G = 1 multi-query), positions
``[B, L]`` / ``[B, S]``.

:func:`dot_product_attention` checks the call, asks the router
(:mod:`posenc_jax.attention.router`) which backend runs it, and runs it: dense
(:mod:`~posenc_jax.attention.dense`), chunked (:mod:`~posenc_jax.attention.chunked`),
prefix (:mod:`~posenc_jax.attention.prefix`) or ``jax.nn.dot_product_attention``
(:mod:`~posenc_jax.attention.fused`). The shared
operations are in :mod:`posenc_jax.attention.ops`.
"""

from collections.abc import Callable

from posenc_jax._checks import as_batched_positions
from posenc_jax.attention.chunked import chunked_attention
from posenc_jax.attention.dense import MapProcessor, dense_attention
from posenc_jax.attention.fused import fused_attention
from posenc_jax.attention.ops import (
    Window,
    as_window,
    check_mask,
    check_padding_mask,
    check_qkv,
    check_separable_bias,
    check_sink_logits,
    temperature_factor,
)
from posenc_jax.attention.prefix import prefix_attention
from posenc_jax.attention.router import choose_implementation
from posenc_jax.attention.stick_breaking import StickBreaking
from posenc_jax.encodings.base import Contextual
from posenc_jax.typing import Array, BiasFn

#: ``temperature(q_positions [B, L], num_keys [B, L]) -> [B, L]`` float32 factor
#: multiplying each query's logit row, ``num_keys`` the number of keys each query may
#: attend (see ``posenc_jax.attention.temperature`` and
#: :func:`~posenc_jax.attention.ops.attendable_keys`).
TemperatureFn = Callable[[Array, Array], Array]


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
    window: Window | int | None = None,
    logit_processor: MapProcessor | None = None,
    weight_processor: MapProcessor | None = None,
    separable_bias: tuple[Array, Array] | None = None,
    sink_logits: Array | None = None,
    stick_breaking: StickBreaking | None = None,
) -> Array:
    """Multi-head attention ``softmax(tau * (q k^T * scale + bias)) v`` with positions as data.

    Args:
      q: queries ``[B, L, H, K]``.
      k: keys ``[B, S, G, K]``; ``H`` must be a multiple of ``G``.
      v: values ``[B, S, G, Kv]`` (``Kv`` may differ from ``K``: an encoding may widen
        queries and keys, as PoPE does).
      bias_fn: ``bias_fn(q_positions, k_positions)`` returning ``[H, L, S]`` or
        ``[B, H, L, S]``, added to the scaled logits. The chunked path calls it once per
        tile with that tile's positions.
      mask: boolean, broadcastable to ``[B, H, L, S]``; True where a query may attend.
      causal: also forbid keys whose position is after the query's position.
      q_positions: integer ``[B, L]`` or ``[L]``; default ``arange(L)``.
      k_positions: integer ``[B, S]`` or ``[S]``; default ``arange(S)``.
      block_size: tile edge of the chunked path (or the query block of the prefix path);
        giving one with ``implementation="auto"`` asks for chunked attention.
      scale: logit scale, a number or a traced scalar; default ``1 / sqrt(K)``.
      contextual: an encoding's content-dependent terms (dense only), see
        :class:`posenc_jax.encodings.base.Contextual`.
      temperature: ``temperature(q_positions, num_keys) -> [B, L]``, a factor ``tau``
        multiplying each query's whole logit row (e.g. an
        :class:`~posenc_jax.attention.temperature.AttentionTemperature`); ``num_keys
        [B, L]`` counts the keys each query may attend
        (:func:`~posenc_jax.attention.ops.attendable_keys`).
      implementation: "auto", "dense", "chunked", "prefix", "jax" or "cudnn" (see
        :mod:`posenc_jax.attention.router`).
      padding_mask: boolean ``[B, S]``, False on padded keys: no query attends them and
        the temperature does not count them.
      window: a :class:`~posenc_jax.attention.ops.Window` (sliding or chunked local), or
        an int w for a sliding window of w keys; None attends every key. The chunked
        backend skips every tile outside it.
      logit_processor: ``f(logits [B, H, L, S], allowed) -> logits`` applied to the full
        logit map before the temperature and the softmax (dense only).
      weight_processor: ``f(weights [B, H, L, S], allowed) -> weights`` applied after the
        softmax (dense only).
      separable_bias: ``(u [B, H, L], w [B, H, S])``: per-token terms of a bias
        ``u_i - w_j`` added like ``bias_fn``'s (the shape of a forget gate's
        ``c_i - c_j``, Lin et al. 2025). The chunked backend tiles it in O(L + S) memory
        and returns its gradients from the hand-written backward pass. ``u`` is constant
        along a query's row, so it changes no softmax weight (its gradient is 0); it keeps
        the logits bounded, as ``c_i - c_j <= 0`` where ``-c_j`` alone grows with j.
      sink_logits: ``[H]``, a learned logit per head added to every row's softmax
        normalizer with a value of zero (an attention sink: ``softmax([z_i1 .. z_iS,
        s_h])`` without its last entry; gpt-oss's ``sinks``). The temperature does not
        multiply it. Dense and chunked (where it starts the online softmax).
      stick_breaking: a :class:`~posenc_jax.attention.stick_breaking.StickBreaking`: the
        weights are stick-breaking's instead of a softmax (causal attention only; dense and
        chunked), or None.

    Returns:
      ``[B, L, H, Kv]`` in q's dtype. A query row with no attendable key returns zeros.

    Raises:
      ValueError: for inconsistent shapes, a bad mask, a contextual term built for the
        other direction (``Contextual.causal``), or a backend requested for a call it
        cannot run (every such message comes from
        :func:`~posenc_jax.attention.router.choose_implementation`).

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
    check_separable_bias(separable_bias, batch, num_heads, q_len, k_len)
    check_sink_logits(sink_logits, num_heads)
    if stick_breaking is not None:
        if not causal:
            raise ValueError(
                "stick-breaking attention is defined for causal attention (each key breaks "
                "the stick left by the keys between it and the query); pass causal=True."
            )
        if sink_logits is not None:
            raise ValueError(
                "a sink logit enters a softmax's normalizer; stick-breaking attention has "
                "none (its remainder already attends nothing). Drop one of them."
            )
    if contextual is not None and contextual.causal not in (None, causal):
        raise ValueError(
            f"the contextual term was built for causal={contextual.causal} attention, but "
            f"this call has causal={causal}; build it (the encoding's contextual hook) with "
            "the attention's direction."
        )
    q_positions = as_batched_positions(q_positions, batch, q_len, "q_positions")
    k_positions = as_batched_positions(k_positions, batch, k_len, "k_positions")
    scale = head_dim**-0.5 if scale is None else scale
    window = as_window(window)
    processors = {"logit_processor": logit_processor, "weight_processor": weight_processor}
    path, block_size = choose_implementation(
        implementation,
        block_size=block_size,
        q_len=q_len,
        k_len=k_len,
        has_contextual=contextual is not None,
        batch=batch,
        num_heads=num_heads,
        has_bias=bias_fn is not None or separable_bias is not None,
        has_mask=mask is not None or padding_mask is not None,
        has_processors=any(f is not None for f in processors.values()),
        window=window,
        dtype=q.dtype,
        head_dim=head_dim,
        value_dim=v.shape[-1],
        has_sink=sink_logits is not None,
        weighting="softmax" if stick_breaking is None else "stick_breaking",
        causal=causal,
    )
    logit_factor = None
    if temperature is not None:
        logit_factor = temperature_factor(
            temperature,
            q_positions,
            k_positions,
            causal=causal,
            padding_mask=padding_mask,
            window=window,
        )

    shared = {
        "causal": causal,
        "q_positions": q_positions,
        "k_positions": k_positions,
        "scale": scale,
        "logit_factor": logit_factor,
        "window": window,
    }
    if path == "chunked":
        return chunked_attention(
            q,
            k,
            v,
            bias_fn=bias_fn,
            mask=mask,
            padding_mask=padding_mask,
            block_size=block_size,
            separable_bias=separable_bias,
            sink_logits=sink_logits,
            stick_breaking=stick_breaking,
            **shared,
        )
    if path in ("jax", "cudnn"):
        return fused_attention(q, k, v, implementation=path, **shared)
    dense_args = {
        "bias_fn": bias_fn,
        "mask": mask,
        "padding_mask": padding_mask,
        "separable_bias": separable_bias,
        "sink_logits": sink_logits,
        "stick_breaking": stick_breaking,
    }
    if path == "prefix":
        return prefix_attention(q, k, v, block_size=block_size, **dense_args, **shared)
    return dense_attention(q, k, v, contextual=contextual, **dense_args, **processors, **shared)
