"""Chunked attention: tiles of logits with an online softmax, never the full ``L x S`` map.

Queries are cut into blocks of ``block_size`` rows and keys into blocks of ``block_size``
columns. Query blocks run one after another (``lax.map``); for each, a ``lax.scan`` over
key blocks keeps the running row maximum ``m``, the running normalizer ``l`` and the
running weighted sum of values, rescaling them by ``exp(m_old - m_new)`` whenever the
maximum grows (Milakov & Gimelshein 2018). The bias is computed per tile from the tile's
positions, so a position bias costs one tile of memory, not one map.

* Key blocks that no query of the block may see (causally every key position is after
  every query position, or the whole block is outside the attention window, for every
  batch row) are skipped, and blocks that every query sees whole skip the position mask;
  ``lax.switch`` picks per block. Causality and windows are read from the positions, so
  they stay right for offsets, caches and randomized positions, and a window of w keys
  costs O(L w) work, not O(L^2).
* Lengths that are not multiples of the block are padded; padded keys are masked and
  padded query rows are dropped.
* q, k and v are cut into head-major tiles ``[n, B, heads, block, K]`` once, the layout
  of the tile products, so no tile is transposed inside the loops (at L 1,024 this took
  the forward + backward from 102 to 85 ms).
* The backward pass is written by hand (FlashAttention's, Dao et al. 2022): the forward
  pass saves only q, k, v, the output and each row's log-normalizer; the backward pass
  recomputes each tile's weights from them and accumulates dq, dk, dv, the row factor's
  gradient, the bias parameters' gradient (through the bias function's VJP, with its
  closed-over parameters made explicit by ``jax.closure_convert``) and the per-token
  terms of a separable bias. Memory stays linear
  in L in training too, and at L 1,024 the attention op's forward + backward took 106 ms
  instead of 168 ms with ``jax.checkpoint`` and autodiff through the online softmax.
  Rows where nothing is allowed get zero weights in both passes, so their values and
  gradients are zeros.
"""

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from posenc_jax.attention.ops import (
    Window,
    allowed_mask,
    checked_bias,
    grouped_logits,
    grouped_shape,
    weighted_values,
)
from posenc_jax.attention.stick_breaking import (
    StickBreaking,
    after,
    broken_stick,
    position_order,
)
from posenc_jax.typing import Array, BiasFn

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


def unsupported(*, has_contextual: bool, has_processors: bool) -> str | None:
    """Why the chunked backend cannot run a call, or None: it never holds the full map."""
    if has_contextual:
        return (
            "this encoding's contextual term needs the full [B, H, L, S] logit map "
            "(needs_dense), so it runs dense only"
        )
    if has_processors:
        return (
            "processors of the full logit or weight map (Multi-Token Attention's "
            "convolution and head mixing) run dense only"
        )
    return None


# Padding positions get extreme values in the block-kind test so they never decide a
# block's kind.
_INT_MIN = jnp.iinfo(jnp.int32).min
_INT_MAX = jnp.iinfo(jnp.int32).max

# A key block's kind under causality and the window, per query block (``_key_block_kinds``).
_SKIP, _WHOLE, _PARTIAL = 0, 1, 2


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
    padding_mask: Array | None = None,
    window: Window | None = None,
    separable_bias: tuple[Array, Array] | None = None,
    sink_logits: Array | None = None,
    stick_breaking: StickBreaking | None = None,
) -> Array:
    """Attention computed tile by tile; same result as the dense path.

    Inputs are the already validated arguments of
    :func:`posenc_jax.attention.core.dot_product_attention` (call that function: it checks
    shapes and routes here).

    Args:
      q: ``[B, L, H, K]``.
      k: ``[B, S, G, K]``.
      v: ``[B, S, G, Kv]`` (values may be narrower or wider than the keys).
      bias_fn: pure ``bias_fn(q_positions [B, l], k_positions [B, s]) -> [(B,) H, l, s]``,
        called once per tile, or None.
      mask: boolean broadcastable to ``[B, H, L, S]``, or None.
      causal: forbid keys whose position is after the query's.
      q_positions: int32 ``[B, L]``.
      k_positions: int32 ``[B, S]``.
      scale: logit scale, a number or a traced scalar (its gradient is returned).
      block_size: tile edge (queries and keys); shorter sequences use one block.
      logit_factor: float32 ``[B, L]`` multiplying each query's logit row, or None.
      padding_mask: boolean ``[B, S]``, False on padded keys, or None. It is cut into key
        tiles with the keys (no ``[L, S]`` mask is built).
      window: a :class:`~posenc_jax.attention.ops.Window`, or None; tiles outside it are
        skipped.
      separable_bias: ``(u [B, H, L], w [B, H, S])`` float32 per-token terms of the bias
        ``u_i - w_j`` (a forget gate's shape), or None. They are cut into tiles with the
        queries and keys, so the term costs O(L + S) memory, and the backward pass returns
        their gradients (row sums of the logit gradient, and minus its column sums).
      sink_logits: float32 ``[H]``, a learned logit per head in every row's normalizer
        (an attention sink), or None. It starts the online softmax (running maximum
        ``s_h``, running sum 1), and the backward pass returns its gradient
        ``-sum_rows exp(s_h - lse) rowsum(dO * O)``.
      stick_breaking: a :class:`~posenc_jax.attention.stick_breaking.StickBreaking`, or
        None (softmax). The keys are put in position order, and each query block scans
        its key blocks from the last backwards, carrying per row the sum of
        ``softplus(z)`` over the keys already visited (the stick broken so far); the
        backward pass scans the same way, carrying also ``sum A_j g_j`` over them.

    Returns:
      ``[B, L, H, Kv]`` in q's dtype; rows with no allowed key are zeros.

    References:
      Milakov & Gimelshein, "Online normalizer calculation for softmax", arXiv 1805.02867,
      2018; Rabe & Staats, "Self-attention Does Not Need O(n^2) Memory", arXiv 2112.05682,
      2021; Dao et al., "FlashAttention", NeurIPS 2022 (tiling, causal block skipping).
    """
    batch, q_len, num_heads, head_dim = q.shape
    k_len = k.shape[1]
    if stick_breaking is not None:
        # The stick is broken from the query backwards in position order: tiles in that
        # order let each row carry what the later keys took.
        order = position_order(k_positions)
        k, v = (jnp.take_along_axis(x, order[:, :, None, None], axis=1) for x in (k, v))
        k_positions = jnp.take_along_axis(k_positions, order, axis=1)
        if padding_mask is not None:
            padding_mask = jnp.take_along_axis(padding_mask, order, axis=1)
        if separable_bias is not None:
            u, w = separable_bias
            separable_bias = (u, jnp.take_along_axis(w, order[:, None, :], axis=2))
        if mask is not None and mask.shape[3] != 1:
            mask = jnp.take_along_axis(mask, order[:, None, None, :], axis=3)
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

    # q, k and v tiles are head-major, [n, B, heads, block, K], the layout of the tile
    # products, so that no tile is transposed inside the loops.
    def head_major(x, pad, size):
        return jnp.swapaxes(blocks(x, 1, pad, size), 2, 3)

    # Padded positions repeat the last real one, so a bias_fn only ever sees positions of
    # the kind the caller passed (their rows and columns are dropped or masked anyway).
    q_tiles = {
        "q": head_major(q, q_pad, q_block),
        "positions": blocks(q_positions, 1, q_pad, q_block, "edge"),
    }
    if logit_factor is not None:
        q_tiles["factor"] = blocks(logit_factor, 1, q_pad, q_block, "edge")
    if separable_bias is not None:
        q_tiles["u"] = blocks(separable_bias[0].astype(jnp.float32), 2, q_pad, q_block, "edge")
    k_tiles = {
        "k": head_major(k, k_pad, k_block),
        "v": head_major(v, k_pad, k_block),
        "positions": blocks(k_positions, 1, k_pad, k_block, "edge"),
    }
    if separable_bias is not None:
        k_tiles["w"] = blocks(separable_bias[1].astype(jnp.float32), 2, k_pad, k_block, "edge")
    # Keys that exist: not block padding and, per batch row, not marked as padding.
    if padding_mask is not None:
        k_tiles["valid"] = blocks(padding_mask.astype(jnp.bool_), 1, k_pad, k_block)
    elif k_pad:
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

    kinds = None
    if causal or window is not None:
        kinds = _key_block_kinds(
            q_positions, k_positions, q_block, k_block, q_pad, k_pad, causal, window
        )

    # The bias function's learned parameters (T5's table, FIRE's MLP) become explicit
    # arguments, so that the hand-written backward pass can return their gradients.
    bias_of, bias_params = None, ()
    if bias_fn is not None:
        bias_of, bias_params = jax.closure_convert(
            bias_fn, q_tiles["positions"][0], k_tiles["positions"][0]
        )
    plan = _Plan(
        bias_of=bias_of,
        num_kv_heads=k.shape[2],
        causal=causal,
        window=window,
        stick_breaking=stick_breaking,
    )
    scale = jnp.asarray(scale, jnp.float32)
    if sink_logits is not None:
        sink_logits = jnp.asarray(sink_logits, jnp.float32)
    out = _flash(plan, q_tiles, k_tiles, scale, sink_logits, tuple(bias_params), mask_tiles, kinds)
    # [nq, B, H, q_block, Kv] -> [B, nq, q_block, H, Kv]
    out = jnp.transpose(out, (1, 0, 3, 2, 4))
    out = out.reshape(batch, num_q_blocks * q_block, num_heads, v.shape[-1])
    return out[:, :q_len].astype(q.dtype)


class _Plan(NamedTuple):
    """What every tile shares: the closure-converted bias function
    ``bias_of(q_positions, k_positions, *bias_params)`` (or None), G, the direction, the
    window and the stick-breaking rule (None: softmax)."""

    bias_of: Callable | None
    num_kv_heads: int
    causal: bool = False
    window: Window | None = None
    stick_breaking: StickBreaking | None = None


def _tile_logits(plan, scale, q_tile, k_tile, bias, masked):
    """``(scores, z, logits, allowed)`` of one tile: ``scores = q.k``, ``z = scores * scale
    + bias``, ``logits`` is ``z`` times the row factor, ``allowed`` the boolean
    ``[B, 1 or H, l, s]`` (or None); ``masked`` says whether the tile needs the mask of
    causality and the window (a tile every query sees whole does not)."""
    scores = grouped_logits(q_tile["q"], k_tile["k"], head_major=True)
    z = scores * scale
    if bias is not None:
        z = z + checked_bias(bias, z.shape)
    if "u" in q_tile:
        z = z + q_tile["u"][..., :, None] - k_tile["w"][..., None, :]
    logits = z * q_tile["factor"][:, None, :, None] if "factor" in q_tile else z
    allowed = allowed_mask(
        q_tile["positions"],
        k_tile["positions"],
        mask=k_tile.get("mask"),
        causal=plan.causal and masked,
        window=plan.window if masked else None,
    )
    if "valid" in k_tile:
        valid = k_tile["valid"]  # [s], or [B, s] with a padding mask
        valid = valid[None, None, None, :] if valid.ndim == 1 else valid[:, None, None, :]
        allowed = valid if allowed is None else jnp.logical_and(allowed, valid)
    if plan.stick_breaking is not None and not plan.stick_breaking.attend_current:
        # In every tile (a whole one may hold a key at the query's own position).
        other = q_tile["positions"][:, None, :, None] != k_tile["positions"][:, None, None, :]
        allowed = other if allowed is None else jnp.logical_and(allowed, other)
    return scores, z, logits, allowed


def _over_key_blocks(tile_fn, init, k_tiles, mask_row, kinds_row, *, reverse=False):
    """Scans ``tile_fn(carry, k_tile, masked) -> (carry, out)`` over the key blocks of one
    query block (the last block first with ``reverse``). ``kinds_row`` (None without
    causality and window) holds each block's kind: a ``_SKIP`` block keeps the carry and
    outputs zeros, a ``_WHOLE`` block runs without the position mask, a ``_PARTIAL`` block
    with it."""

    def key_step(carry, xs):
        k_tile, mask_tile, kind = xs
        if mask_tile is not None:
            k_tile = {**k_tile, "mask": mask_tile}
        if kind is None:
            return tile_fn(carry, k_tile, False)
        out_shapes = jax.eval_shape(lambda c: tile_fn(c, k_tile, True), carry)[1]
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), out_shapes)
        branches = [None] * 3
        branches[_SKIP] = lambda c: (c, zeros)
        branches[_WHOLE] = lambda c: tile_fn(c, k_tile, False)
        branches[_PARTIAL] = lambda c: tile_fn(c, k_tile, True)
        return jax.lax.switch(kind, branches, carry)

    return jax.lax.scan(key_step, init, (k_tiles, mask_row, kinds_row), reverse=reverse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(plan, q_tiles, k_tiles, scale, sink_logits, bias_params, mask_tiles, kinds):
    """Float32 output tiles ``[nq, B, H, q_block, Kv]`` of attention over the tiles."""
    return _flash_forward(
        plan, q_tiles, k_tiles, scale, sink_logits, bias_params, mask_tiles, kinds
    )[0]


def _flash_forward(plan, q_tiles, k_tiles, scale, sink_logits, bias_params, mask_tiles, kinds):
    """The online softmax over key blocks, one query block after another; also returns
    each row's log-normalizer ``lse`` ``[nq, B, H, q_block]`` (+inf where nothing is
    allowed and there is no sink, so that recomputed weights are zero there). With a
    stick-breaking plan, :func:`_stick_breaking_forward` instead."""
    if plan.stick_breaking is not None:
        return _stick_breaking_forward(
            plan, q_tiles, k_tiles, scale, bias_params, mask_tiles, kinds
        )

    def query_block(xs):
        q_tile, mask_row, kinds_row = xs
        batch, num_heads, q_block, _ = q_tile["q"].shape
        value_dim = k_tiles["v"].shape[-1]

        def tile(carry, k_tile, masked):
            row_max, row_sum, acc = carry
            bias = _bias(plan, q_tile, k_tile, bias_params)
            _, _, logits, allowed = _tile_logits(plan, scale, q_tile, k_tile, bias, masked)
            if allowed is not None:
                logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
            new_max = jnp.maximum(row_max, jnp.max(logits, axis=-1))
            unnormalized = jnp.exp(logits - new_max[..., None])
            if allowed is not None:
                unnormalized = jnp.where(allowed, unnormalized, 0.0)
            correction = jnp.exp(row_max - new_max)
            row_sum = row_sum * correction + jnp.sum(unnormalized, axis=-1)
            acc = acc * correction[..., None] + weighted_values(
                unnormalized, k_tile["v"], head_major=True
            )
            return (new_max, row_sum, acc), None

        stats_shape = (batch, num_heads, q_block)
        if sink_logits is None:
            row_max = jnp.full(stats_shape, jnp.finfo(jnp.float32).min, jnp.float32)
            row_sum = jnp.zeros(stats_shape, jnp.float32)
        else:  # the sink is a logit every row starts with: maximum s_h, sum exp(0) = 1
            row_max = jnp.broadcast_to(sink_logits[None, :, None], stats_shape)
            row_sum = jnp.ones(stats_shape, jnp.float32)
        init = (row_max, row_sum, jnp.zeros(stats_shape + (value_dim,), jnp.float32))
        (row_max, row_sum, acc), _ = _over_key_blocks(tile, init, k_tiles, mask_row, kinds_row)
        has_keys = row_sum > 0
        safe_sum = jnp.where(has_keys, row_sum, 1.0)
        out = acc / safe_sum[..., None]
        lse = jnp.where(has_keys, row_max + jnp.log(safe_sum), jnp.inf)
        return out, lse

    return jax.lax.map(query_block, (q_tiles, mask_tiles, kinds))


def _stick_breaking_forward(plan, q_tiles, k_tiles, scale, bias_params, mask_tiles, kinds):
    """Stick-breaking weights over key blocks from the last backwards, one query block
    after another: each row carries the sum of ``softplus(z)`` over the keys already
    visited, and the weighted values add up without normalization. Also returns that sum
    over every key ``[nq, B, H, q_block]`` (the stick's remainder is ``exp`` of minus it)."""

    def query_block(xs):
        q_tile, mask_row, kinds_row = xs
        batch, num_heads, q_block, _ = q_tile["q"].shape
        value_dim = k_tiles["v"].shape[-1]

        def tile(carry, k_tile, masked):
            later, acc = carry
            bias = _bias(plan, q_tile, k_tile, bias_params)
            _, _, logits, allowed = _tile_logits(plan, scale, q_tile, k_tile, bias, masked)
            weights, breaks = broken_stick(logits, allowed, later)
            acc = acc + weighted_values(weights, k_tile["v"], head_major=True)
            return (later + jnp.sum(breaks, axis=-1), acc), None

        stats_shape = (batch, num_heads, q_block)
        init = (
            jnp.zeros(stats_shape, jnp.float32),
            jnp.zeros(stats_shape + (value_dim,), jnp.float32),
        )
        (later, acc), _ = _over_key_blocks(tile, init, k_tiles, mask_row, kinds_row, reverse=True)
        return acc, later

    return jax.lax.map(query_block, (q_tiles, mask_tiles, kinds))


def _stick_breaking_gradient(logits, allowed, g, total, running):
    """One tile's weights ``A``, the loss's gradient with respect to its logits and the
    running sums, in the backward scan (key blocks from the last backwards).

    For ``L = sum_j A_j g_j`` (``g_j = dO . v_j``), ``dL/dz_j = A_j g_j (1 - sigmoid(z_j))
    - sigmoid(z_j) sum_{m < j} A_m g_m``: key j's break shrinks every earlier key's share.
    The sum over the earlier keys is the row's total ``sum_m A_m g_m = dO . O`` minus the
    keys from j on (carried), so no scan in the other direction is needed.

    Args:
      logits, allowed: the tile's (``[B, H, l, s]``).
      g: ``dO . v_j`` ``[B, H, l, s]``.
      total: ``dO . O`` per row ``[B, H, l]``.
      running: ``(later, later_ag)``, the sums of ``softplus(z)`` and of ``A g`` over the
        keys of the blocks after this one.
    """
    later, later_ag = running
    weights, breaks = broken_stick(logits, allowed, later)
    ag = weights * g
    earlier = total[..., None] - (later_ag[..., None] + after(ag) + ag)
    gate = jax.nn.sigmoid(logits)
    d_logits = ag * (1.0 - gate) - gate * earlier
    if allowed is not None:
        d_logits = jnp.where(allowed, d_logits, 0.0)
    running = (later + jnp.sum(breaks, axis=-1), later_ag + jnp.sum(ag, axis=-1))
    return weights, d_logits, running


def _bias(plan, q_tile, k_tile, bias_params):
    if plan.bias_of is None:
        return None
    return plan.bias_of(q_tile["positions"], k_tile["positions"], *bias_params)


def _flash_fwd(plan, q_tiles, k_tiles, scale, sink_logits, bias_params, mask_tiles, kinds):
    out, lse = _flash_forward(
        plan, q_tiles, k_tiles, scale, sink_logits, bias_params, mask_tiles, kinds
    )
    residuals = (q_tiles, k_tiles, scale, sink_logits, bias_params, mask_tiles, kinds, out, lse)
    return out, residuals


def _flash_bwd(plan, residuals, d_out):
    """The backward pass of FlashAttention (Dao et al. 2022, Algorithm 4): each tile's
    weights ``p`` are recomputed from the saved ``lse``, then ``dv += p^T dO``,
    ``ds = p (dO v^T - rowsum(dO * O))``, ``dq += ds k``, ``dk += ds^T q`` (times the
    scale and the row factor), the scale gets ``sum(ds * q.k)``, the bias parameters get
    ``ds`` through the bias's VJP, and a sink logit, which changes only the normalizer,
    ``-sum_rows p_sink rowsum(dO * O)``."""
    q_tiles, k_tiles, scale, sink_logits, bias_params, mask_tiles, kinds, out, lse = residuals
    groups = plan.num_kv_heads
    d_out = d_out.astype(jnp.float32)
    d_rows = jnp.sum(d_out * out, axis=-1)  # [nq, B, H, q_block]
    d_sink = None
    if sink_logits is not None:
        sink_weights = jnp.exp(sink_logits[None, None, :, None] - lse)
        d_sink = -jnp.sum(sink_weights * d_rows, axis=(0, 1, 3))

    stick = plan.stick_breaking is not None

    def query_block(carry, xs):
        dk_sum, dv_sum, d_params, dw_sum = carry
        q_tile, d_out_tile, lse_tile, d_row, mask_row, kinds_row = xs
        q_f32 = q_tile["q"].astype(jnp.float32)

        def tile(carry, k_tile, masked):
            dq, d_factor, du, d_params, running = carry
            bias, bias_vjp = None, None
            if plan.bias_of is not None:
                bias, bias_vjp = jax.vjp(
                    lambda *params: _bias(plan, q_tile, k_tile, params), *bias_params
                )
            scores, z, logits, allowed = _tile_logits(plan, scale, q_tile, k_tile, bias, masked)
            dp = grouped_logits(d_out_tile, k_tile["v"].astype(jnp.float32), head_major=True)
            if stick:
                p, ds, running = _stick_breaking_gradient(logits, allowed, dp, d_row, running)
            else:
                p = jnp.exp(logits - lse_tile[..., None])
                if allowed is not None:
                    p = jnp.where(allowed, p, 0.0)
                ds = p * (dp - d_row[..., None])  # d loss / d logits
            dv = _key_gradient(p, d_out_tile, groups)
            if "factor" in q_tile:
                d_factor = d_factor + jnp.sum(ds * z, axis=(1, 3))
                ds = ds * q_tile["factor"][:, None, :, None]  # d loss / d z
            k = k_tile["k"].astype(jnp.float32)
            dq = dq + weighted_values(ds, k, head_major=True) * scale
            dk = _key_gradient(ds, q_f32, groups) * scale
            dw = None
            if "u" in q_tile:
                du = du + jnp.sum(ds, axis=3)
                dw = -jnp.sum(ds, axis=2)
            d_scale, d_bias_params = d_params
            d_scale = d_scale + jnp.sum(ds * scores)
            if bias_vjp is not None:
                d_bias = ds
                if bias.ndim == 3:
                    d_bias = jnp.sum(ds, axis=0)
                elif bias.shape[0] == 1:
                    d_bias = jnp.sum(ds, axis=0, keepdims=True)
                d_bias_params = jax.tree.map(
                    jnp.add, d_bias_params, bias_vjp(d_bias.astype(bias.dtype))
                )
            return (dq, d_factor, du, (d_scale, d_bias_params), running), (dk, dv, dw)

        d_factor = jnp.zeros(q_tile["positions"].shape, jnp.float32)  # [B, q_block]
        du = jnp.zeros(q_tile["u"].shape, jnp.float32) if "u" in q_tile else None
        running = (jnp.zeros_like(d_row), jnp.zeros_like(d_row)) if stick else None
        init = (jnp.zeros_like(q_f32), d_factor, du, d_params, running)
        (dq, d_factor, du, d_params, _), (dk, dv, dw) = _over_key_blocks(
            tile, init, k_tiles, mask_row, kinds_row, reverse=stick
        )
        dw_sum = None if dw is None else dw_sum + dw
        return (dk_sum + dk, dv_sum + dv, d_params, dw_sum), (dq, d_factor, du)

    init = (
        jnp.zeros(k_tiles["k"].shape, jnp.float32),
        jnp.zeros(k_tiles["v"].shape, jnp.float32),
        (jnp.zeros_like(scale), jax.tree.map(jnp.zeros_like, bias_params)),
        jnp.zeros(k_tiles["w"].shape, jnp.float32) if "w" in k_tiles else None,
    )
    (dk, dv, (d_scale, d_bias_params), dw), (dq, d_factor, du) = jax.lax.scan(
        query_block, init, (q_tiles, d_out, lse, d_rows, mask_tiles, kinds)
    )
    d_q_tiles = {"q": dq.astype(q_tiles["q"].dtype), "positions": None}
    if "factor" in q_tiles:
        d_q_tiles["factor"] = d_factor
    if "u" in q_tiles:
        d_q_tiles["u"] = du
    d_k_tiles = {key: None for key in k_tiles}
    d_k_tiles.update(k=dk.astype(k_tiles["k"].dtype), v=dv.astype(k_tiles["v"].dtype))
    if "w" in k_tiles:
        d_k_tiles["w"] = dw
    return d_q_tiles, d_k_tiles, d_scale, d_sink, d_bias_params, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _key_gradient(weights: Array, x: Array, num_kv_heads: int) -> Array:
    """``sum_i weights[..., i, j] x_i`` ``[B, G, s, K]`` for ``weights [B, H, l, s]`` and
    ``x [B, H, l, K]``, summed over the query heads that share a key head (dk and dv)."""
    grouped = weights.reshape(grouped_shape(weights.shape, num_kv_heads, 1))
    x = x.reshape(grouped_shape(x.shape, num_kv_heads, 1))
    return jnp.einsum("BGRLS,BGRLK->BGSK", grouped, x, preferred_element_type=jnp.float32)


def _key_block_kinds(
    q_positions: Array,
    k_positions: Array,
    q_block: int,
    k_block: int,
    q_pad: int,
    k_pad: int,
    causal: bool,
    window: Window | None,
) -> Array:
    """Int32 ``[n_q_blocks, n_k_blocks]``: each block pair's ``_SKIP``, ``_WHOLE`` or
    ``_PARTIAL`` under causality and the window, by positions.

    From each block's smallest and largest positions (in every batch row): a block is
    skipped when some constraint lets no (query, key) pair of it in, and whole when every
    constraint lets every pair in. Padded rows and columns (dropped or masked anyway)
    count as neither.
    """
    batch = q_positions.shape[0]

    def per_block(positions, pad, size, fill, reduce):
        padded = jnp.pad(positions, ((0, 0), (0, pad)), constant_values=fill)
        return reduce(padded.reshape(batch, -1, size), axis=-1)  # [B, n blocks]

    q_max = per_block(q_positions, q_pad, q_block, _INT_MIN, jnp.max)[:, :, None]
    q_min = per_block(q_positions, q_pad, q_block, _INT_MAX, jnp.min)[:, :, None]
    k_min = per_block(k_positions, k_pad, k_block, _INT_MAX, jnp.min)[:, None, :]
    k_max = per_block(k_positions, k_pad, k_block, _INT_MIN, jnp.max)[:, None, :]
    none_in, all_in = [], []
    if causal:
        none_in.append(k_min > q_max)
        all_in.append(k_max <= q_min)
    if window is not None:
        w = window.size
        if window.kind == "sliding":
            # Allowed: q - w < k (and k < q + w when bidirectional).
            none_in.append(k_max <= q_min - w)
            all_in.append(k_min > q_max - w)
            if not causal:
                none_in.append(k_min >= q_max + w)
                all_in.append(k_max < q_min + w)
        else:
            none_in.append((k_max // w < q_min // w) | (k_min // w > q_max // w))
            same = (k_min // w == k_max // w) & (q_min // w == q_max // w)
            all_in.append(same & (k_min // w == q_min // w))
    skip = jnp.all(_any(none_in), axis=0)
    whole = jnp.all(_every(all_in), axis=0)
    return jnp.where(skip, _SKIP, jnp.where(whole, _WHOLE, _PARTIAL)).astype(jnp.int32)


def _any(conditions):
    out = conditions[0]
    for condition in conditions[1:]:
        out = out | condition
    return out


def _every(conditions):
    out = conditions[0]
    for condition in conditions[1:]:
        out = out & condition
    return out
