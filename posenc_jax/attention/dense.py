"""The dense backend: the whole ``[B, H, L, S]`` logit map, then the softmax.

It runs every call: a position bias, a contextual term (which needs the map), processors
of the logit map and of the weights (Multi-Token Attention's convolution and head mixing),
masks, windows, a per-query temperature, a learned sink logit per head, and the
stick-breaking weights in place of the softmax. Its memory is O(L S) per head, so the router
sends long sequences to the chunked backend when nothing needs the full map.
"""

from collections.abc import Callable

import jax.numpy as jnp

from posenc_jax.attention.ops import (
    Window,
    allowed_mask,
    dense_logits,
    masked_softmax,
    weighted_values,
)
from posenc_jax.attention.stick_breaking import StickBreaking, stick_breaking_weights
from posenc_jax.encodings.base import Contextual
from posenc_jax.typing import Array, BiasFn

#: ``processor(map [B, H, L, S] float32, allowed [B, 1 or H, L, S] or None) -> map``.
MapProcessor = Callable[[Array, Array | None], Array]


def dense_weights(
    q: Array,
    k: Array,
    *,
    bias_fn: BiasFn | None,
    mask: Array | None,
    causal: bool,
    q_positions: Array,
    k_positions: Array,
    scale: float | Array,
    logit_factor: Array | None = None,
    padding_mask: Array | None = None,
    window: Window | None = None,
    contextual: Contextual | None = None,
    logit_processor: MapProcessor | None = None,
    weight_processor: MapProcessor | None = None,
    separable_bias: tuple[Array, Array] | None = None,
    sink_logits: Array | None = None,
    stick_breaking: StickBreaking | None = None,
) -> Array:
    """The attention weights ``[B, H, L, S]`` (float32) of a call; the arguments are the
    core's after its checks (:func:`posenc_jax.attention.core.dot_product_attention`).

    The order: ``scale * q.k`` plus the bias, the contextual term, the separable bias
    ``u_i - w_j``, the logit processor, the temperature, the masked softmax (with the
    sink logits in its normalizer) or the stick-breaking weights, the weight processor.
    Rows with no allowed key are zeros.
    """
    allowed = allowed_mask(
        q_positions,
        k_positions,
        mask=mask,
        causal=causal,
        padding_mask=padding_mask,
        window=window,
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
        separable_bias=separable_bias,
    )
    if logit_processor is not None:
        logits = _checked_map(logit_processor(logits, allowed), logits.shape, "logit")
    if logit_factor is not None:
        logits = logits * logit_factor[:, None, :, None]
    if stick_breaking is None:
        weights = masked_softmax(logits, allowed, sink_logits)
    else:
        if not stick_breaking.attend_current:
            other = q_positions[:, None, :, None] != k_positions[:, None, None, :]
            allowed = other if allowed is None else jnp.logical_and(allowed, other)
        weights = stick_breaking_weights(logits, allowed, k_positions)
    if weight_processor is not None:
        weights = _checked_map(weight_processor(weights, allowed), weights.shape, "weight")
    return weights


def dense_attention(
    q: Array, k: Array, v: Array, *, contextual: Contextual | None = None, **call
) -> Array:
    """Attention over the full logit map: :func:`dense_weights` (same arguments), then the
    weighted values plus the contextual term's values.

    Returns:
      ``[B, L, H, K]`` in q's dtype; rows with no allowed key are zeros.
    """
    weights = dense_weights(q, k, contextual=contextual, **call)
    out = jnp.swapaxes(weighted_values(weights, v), 1, 2)
    if contextual is not None and contextual.values is not None:
        out = out + contextual.values(weights, call["q_positions"], call["k_positions"])
    return out.astype(q.dtype)


def _checked_map(values: Array, shape: tuple[int, ...], what: str) -> Array:
    if values.shape != shape:
        raise ValueError(
            f"the {what} processor returned shape {values.shape}; expected [B, H, L, S] = "
            f"{list(shape)}."
        )
    return values.astype(jnp.float32)
