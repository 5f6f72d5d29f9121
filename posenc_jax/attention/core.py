"""Scaled dot-product attention over explicit positions: the dense path.

Shapes (see ``posenc_jax.typing``): q ``[B, L, H, K]``, k and v ``[B, S, G, K]`` with
``H % G == 0`` (G < H is grouped-query attention, G = 1 multi-query), positions
``[B, L]`` / ``[B, S]``.
"""

import chex
import jax
import jax.numpy as jnp

from posenc_jax._checks import as_batched_positions
from posenc_jax.typing import Array, BiasFn


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
    q_positions: Array, k_positions: Array, *, mask: Array | None, causal: bool
) -> Array | None:
    """Boolean ``[B, 1 or H, L, S]`` of attendable (query, key) pairs, or None for all.

    Causality is defined by positions: query i may attend key j when
    ``k_position[j] <= q_position[i]``. With ``arange`` positions this is the usual lower
    triangle; with a decoding cache or left padding it is still right, because positions
    are data.
    """
    allowed = None
    if causal:
        allowed = (k_positions[:, None, None, :] <= q_positions[:, None, :, None])
    if mask is not None:
        allowed = mask if allowed is None else jnp.logical_and(allowed, mask)
    return allowed


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


def masked_softmax(logits: Array, allowed: Array | None) -> Array:
    """Softmax over the last axis in float32; a row with nothing allowed gives zeros.

    No -inf enters the computation, so values and gradients stay finite even for fully
    masked rows (padding queries, the first rows of a windowed mask).
    """
    logits = logits.astype(jnp.float32)
    if allowed is None:
        return jax.nn.softmax(logits, axis=-1)
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    unnormalized = jnp.exp(logits - row_max) * allowed
    total = jnp.sum(unnormalized, axis=-1, keepdims=True)
    return unnormalized / jnp.where(total > 0, total, 1.0)


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
    scale: float | None = None,
) -> Array:
    """Multi-head attention ``softmax(q k^T * scale + bias) v`` with positions as data.

    Args:
      q: queries ``[B, L, H, K]``.
      k: keys ``[B, S, G, K]``; ``H`` must be a multiple of ``G``.
      v: values ``[B, S, G, K]``.
      bias_fn: ``bias_fn(q_positions, k_positions)`` returning ``[H, L, S]`` or
        ``[B, H, L, S]``, added to the scaled logits.
      mask: boolean, broadcastable to ``[B, H, L, S]``; True where a query may attend.
      causal: also forbid keys whose position is after the query's position.
      q_positions: integer ``[B, L]`` or ``[L]``; default ``arange(L)``.
      k_positions: integer ``[B, S]`` or ``[S]``; default ``arange(S)``.
      scale: logit scale; default ``1 / sqrt(K)``.

    Returns:
      ``[B, L, H, K]`` in q's dtype. A query row with no attendable key returns zeros.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (Eq. 1); Ainslie et al.,
      "GQA", EMNLP 2023.
    """
    check_qkv(q, k, v)
    batch, q_len, num_heads, head_dim = q.shape
    k_len, num_kv_heads = k.shape[1], k.shape[2]
    check_mask(mask, batch, num_heads, q_len, k_len)
    q_positions = as_batched_positions(q_positions, batch, q_len, "q_positions")
    k_positions = as_batched_positions(k_positions, batch, k_len, "k_positions")
    scale = head_dim**-0.5 if scale is None else scale

    group = num_heads // num_kv_heads
    q_grouped = q.reshape(batch, q_len, num_kv_heads, group, head_dim)
    logits = jnp.einsum(
        "BLGRK,BSGK->BGRLS", q_grouped, k, preferred_element_type=jnp.float32
    ).reshape(batch, num_heads, q_len, k_len)
    logits = logits * scale
    if bias_fn is not None:
        logits = logits + _checked_bias(bias_fn(q_positions, k_positions), logits.shape)
    weights = masked_softmax(logits, allowed_mask(q_positions, k_positions, mask=mask, causal=causal))
    weights = weights.reshape(batch, num_kv_heads, group, q_len, k_len).astype(v.dtype)
    out = jnp.einsum("BGRLS,BSGK->BLGRK", weights, v)
    return out.reshape(batch, q_len, num_heads, head_dim)


def _checked_bias(bias: Array, logits_shape: tuple[int, ...]) -> Array:
    """Accepts ``[H, L, S]`` or ``[B, H, L, S]`` biases; returns a float32 rank-4 bias."""
    if bias.ndim == 3:
        bias = bias[None]
    if bias.ndim != 4 or bias.shape[1:] != tuple(logits_shape[1:]) or bias.shape[0] not in (
        1,
        logits_shape[0],
    ):
        raise ValueError(
            f"bias_fn returned shape {bias.shape}; expected [H, L, S] or [B, H, L, S] with "
            f"[B, H, L, S] = {list(logits_shape)}."
        )
    return bias.astype(jnp.float32)
