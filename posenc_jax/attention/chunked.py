"""Chunked attention: tiles of logits with an online softmax, never the full ``L x S`` map.

Queries are cut into blocks of ``block_size`` rows and keys into blocks of ``block_size``
columns. Query blocks run one after another (``lax.map``); for each, a ``lax.scan`` over
key blocks keeps the running row maximum ``m``, the running normalizer ``l`` and the
running weighted sum of values, rescaling them by ``exp(m_old - m_new)`` whenever the
maximum grows (Milakov & Gimelshein 2018). The bias is computed per tile from the tile's
positions, so a position bias costs one tile of memory, not one map.

* Causal key blocks that no query of the block may see (every key position is after every
  query position, for every batch row) are skipped with ``lax.cond``; causality is read
  from the positions, so it stays right for offsets, caches and randomized positions.
* Lengths that are not multiples of the block are padded; padded keys are masked and
  padded query rows are dropped.
* The running maximum is held out of differentiation: the output does not depend on it, so
  its gradient is exactly zero and treating it as a constant keeps every gradient finite
  even for rows where nothing is allowed (those rows return zeros).
* The per-tile step is wrapped in ``jax.checkpoint``: the backward pass keeps only each
  step's running statistics and recomputes the tile, instead of storing every tile's
  logits (which together would be the full map again).
"""

import math

import jax
import jax.numpy as jnp

from posenc_jax.attention.core import allowed_mask, checked_bias, grouped_logits, weighted_values
from posenc_jax.typing import Array, BiasFn

# Padding positions get extreme values in the skip test so they never keep a block alive.
_INT_MIN = jnp.iinfo(jnp.int32).min
_INT_MAX = jnp.iinfo(jnp.int32).max


def chunked_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    bias_fn: BiasFn | None,
    mask: Array | None,
    causal: bool,
    q_positions: Array,
    k_positions: Array,
    scale: float,
    block_size: int,
    logit_factor: Array | None = None,
) -> Array:
    """Attention computed tile by tile; same result as the dense path.

    Inputs are the already validated arguments of
    :func:`posenc_jax.attention.core.dot_product_attention` (call that function: it checks
    shapes and routes here).

    Args:
      q: ``[B, L, H, K]``.
      k: ``[B, S, G, K]``.
      v: ``[B, S, G, K]``.
      bias_fn: pure ``bias_fn(q_positions [B, l], k_positions [B, s]) -> [(B,) H, l, s]``,
        called once per tile, or None.
      mask: boolean broadcastable to ``[B, H, L, S]``, or None.
      causal: forbid keys whose position is after the query's.
      q_positions: int32 ``[B, L]``.
      k_positions: int32 ``[B, S]``.
      scale: logit scale.
      block_size: tile edge (queries and keys); shorter sequences use one block.
      logit_factor: float32 ``[B, L]`` multiplying each query's logit row, or None.

    Returns:
      ``[B, L, H, K]`` in q's dtype; rows with no allowed key are zeros.

    References:
      Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867,
      2018; Rabe & Staats, "Self-attention Does Not Need O(n^2) Memory", arXiv 2112.05682,
      2021; Dao et al., "FlashAttention", NeurIPS 2022 (tiling, causal block skipping).
    """
    batch, q_len, num_heads, head_dim = q.shape
    k_len = k.shape[1]
    q_block, k_block = min(block_size, q_len), min(block_size, k_len)
    num_q_blocks, num_k_blocks = math.ceil(q_len / q_block), math.ceil(k_len / k_block)
    q_pad, k_pad = num_q_blocks * q_block - q_len, num_k_blocks * k_block - k_len

    # Blocks along a new leading axis: [n, B, block, ...].
    def blocks(x, axis, pad, size, mode="constant"):
        if pad:
            widths = [(0, 0)] * x.ndim
            widths[axis] = (0, pad)
            x = jnp.pad(x, widths, mode=mode)
        shape = x.shape[:axis] + (x.shape[axis] // size, size) + x.shape[axis + 1 :]
        return jnp.moveaxis(x.reshape(shape), axis, 0)

    # Padded positions repeat the last real one, so a bias_fn only ever sees positions of
    # the kind the caller passed (their rows and columns are dropped or masked anyway).
    q_tiles = {
        "q": blocks(q, 1, q_pad, q_block),
        "positions": blocks(q_positions, 1, q_pad, q_block, "edge"),
    }
    if logit_factor is not None:
        q_tiles["factor"] = blocks(logit_factor, 1, q_pad, q_block, "edge")
    k_tiles = {
        "k": blocks(k, 1, k_pad, k_block),
        "v": blocks(v, 1, k_pad, k_block),
        "positions": blocks(k_positions, 1, k_pad, k_block, "edge"),
    }
    if k_pad:
        k_tiles["valid"] = blocks(jnp.arange(k_len + k_pad) < k_len, 0, 0, k_block)

    # The mask is cut along whichever of its L and S axes is not broadcast.
    mask_tiles = None
    if mask is not None:
        mask_tiles = mask
        if mask.shape[2] != 1:
            mask_tiles = blocks(mask_tiles, 2, q_pad, q_block)
        else:
            mask_tiles = jnp.broadcast_to(mask_tiles, (num_q_blocks,) + mask.shape)
        if mask.shape[3] != 1:
            # [nq, Bm, Hm, lq, S] -> [nq, nk, Bm, Hm, lq, k_block]
            mask_tiles = jnp.moveaxis(blocks(mask_tiles, 4, k_pad, k_block), 0, 1)
        else:
            mask_tiles = jnp.broadcast_to(
                mask_tiles[:, None], (num_q_blocks, num_k_blocks) + mask_tiles.shape[1:]
            )
        q_tiles["mask"] = mask_tiles

    if causal:
        q_tiles["needed"] = _needed_key_blocks(
            q_positions, k_positions, q_block, k_block, q_pad, k_pad
        )

    def tile_step(q_tile, carry, k_tile, mask_tile):
        row_max, row_sum, acc = carry
        logits = grouped_logits(q_tile["q"], k_tile["k"]) * scale
        if bias_fn is not None:
            bias = bias_fn(q_tile["positions"], k_tile["positions"])
            logits = logits + checked_bias(bias, logits.shape)
        if "factor" in q_tile:
            logits = logits * q_tile["factor"][:, None, :, None]
        allowed = allowed_mask(
            q_tile["positions"], k_tile["positions"], mask=mask_tile, causal=causal
        )
        if "valid" in k_tile:
            valid = k_tile["valid"][None, None, None, :]
            allowed = valid if allowed is None else jnp.logical_and(allowed, valid)
        if allowed is not None:
            logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
        new_max = jax.lax.stop_gradient(jnp.maximum(row_max, jnp.max(logits, axis=-1)))
        unnormalized = jnp.exp(logits - new_max[..., None])
        if allowed is not None:
            unnormalized = unnormalized * allowed
        correction = jnp.exp(row_max - new_max)
        row_sum = row_sum * correction + jnp.sum(unnormalized, axis=-1)
        acc = acc * correction[..., None] + weighted_values(unnormalized, k_tile["v"])
        return new_max, row_sum, acc

    def query_block(q_tile):
        q_tile = dict(q_tile)
        mask_row = q_tile.pop("mask", None)  # [nk, Bm, Hm, lq, lk] or None
        needed_row = q_tile.pop("needed", None)  # [nk] or None

        def key_step(carry, xs):
            k_tile, mask_tile, needed = xs
            step = lambda c: tile_step(q_tile, c, k_tile, mask_tile)
            if needed is None:
                return step(carry), None
            return jax.lax.cond(needed, step, lambda c: c, carry), None

        stats_shape = (batch, num_heads, q_block)
        init = (
            jnp.full(stats_shape, jnp.finfo(jnp.float32).min, jnp.float32),
            jnp.zeros(stats_shape, jnp.float32),
            jnp.zeros(stats_shape + (head_dim,), jnp.float32),
        )
        (_, row_sum, acc), _ = jax.lax.scan(
            jax.checkpoint(key_step, prevent_cse=False), init, (k_tiles, mask_row, needed_row)
        )
        out = acc / jnp.where(row_sum > 0, row_sum, 1.0)[..., None]
        return jnp.swapaxes(out, 1, 2).astype(q.dtype)

    out = jax.lax.map(query_block, q_tiles)  # [nq, B, q_block, H, K]
    out = jnp.moveaxis(out, 0, 1).reshape(batch, num_q_blocks * q_block, num_heads, head_dim)
    return out[:, :q_len]


def _needed_key_blocks(
    q_positions: Array, k_positions: Array, q_block: int, k_block: int, q_pad: int, k_pad: int
) -> Array:
    """Boolean ``[n_q_blocks, n_k_blocks]``: may any query of the block see any key of it?

    A key block is needed when, for some batch row, its smallest key position is at most
    the query block's largest query position (causality by positions).
    """
    batch = q_positions.shape[0]
    q_positions = jnp.pad(q_positions, ((0, 0), (0, q_pad)), constant_values=_INT_MIN)
    k_positions = jnp.pad(k_positions, ((0, 0), (0, k_pad)), constant_values=_INT_MAX)
    q_max = jnp.max(q_positions.reshape(batch, -1, q_block), axis=-1)  # [B, nq]
    k_min = jnp.min(k_positions.reshape(batch, -1, k_block), axis=-1)  # [B, nk]
    return jnp.any(k_min[:, None, :] <= q_max[:, :, None], axis=0)
