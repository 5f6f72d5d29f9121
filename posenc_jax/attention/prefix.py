"""The prefix backend: causal attention in blocks of queries, each over the keys up to its
last query, so the logits above the diagonal's blocks are never computed.

Causal self-attention over ``L`` tokens needs only the pairs with ``j <= i``. The dense
backend computes all ``L^2`` and masks half of them; here the queries are cut into
blocks of ``b`` rows and block ``n`` is the dense backend's call on its own rows and the
first ``(n + 1) b`` keys: ``(N + 1) / (2 N)`` of the pairs for ``N`` blocks, each block's
softmax exact (no online rescaling, no loop: the blocks are unrolled at trace time).
Measured at L 256, batch 16, 8 heads of 32 (forward + backward, CPU, one process): 49 ms
(median; best 45) with blocks of 64 against 69 ms (62) dense, and 7-9% off the study's
whole training step (``experiments/benchmarks/NOTES.md``, change 17).

Causality is by positions; the blocks leave out keys by index. The two agree when queries
and keys share one strictly increasing sequence of positions
(:func:`~posenc_jax.attention.ops.positions_follow_indices`, checked at run time in
``O(B L)``); otherwise ``lax.cond`` runs the dense backend on the whole map. Keys left
out are ones no query of the block may attend, so every term that sees only allowed
keys (a bias, a mask, padding, a window, a sink logit, stick-breaking's stick) is the
same as the dense backend's; a contextual term and processors of the full map are not
run here (the router sends them to the dense backend).
"""

import jax
import jax.numpy as jnp

from posenc_jax.attention.dense import dense_attention
from posenc_jax.attention.ops import positions_follow_indices
from posenc_jax.typing import Array

#: The router's prefix runs cut the queries into this many blocks: at L 256 blocks of 64.
#: Measured there (batch 16, 8 heads of 32), forward + backward, medians: unrolled blocks
#: of 128 / 64 / 32 without the run-time condition took 62 / 51 / 45 ms against 79 ms
#: dense; in this backend blocks of 32 were no faster than 64 (42-56 against 45-66 ms).
#: Every block is traced and compiled on its own, so their number is fixed: with blocks of
#: 64 at L 512 (8 blocks) a 3-layer decoder's gradient took 6.0 s to compile against 1.5 s
#: dense.
NUM_BLOCKS = 4

#: The shortest causal self-attention the router sends here (blocks of 32).
MIN_LENGTH = 128


def default_block_size(q_len: int) -> int:
    """The query block of a prefix run over ``q_len`` queries: :data:`NUM_BLOCKS` blocks."""
    return -(-q_len // NUM_BLOCKS)


def unsupported(*, causal: bool, q_len: int, k_len: int) -> str | None:
    """Why the prefix backend cannot run a call, or None: it runs causal self-attention
    (queries and keys of one length)."""
    if not causal:
        return "the prefix backend runs causal attention (it leaves out future keys)"
    if q_len != k_len:
        return (
            f"the prefix backend runs self-attention (as many queries as keys), but L={q_len} "
            f"and S={k_len}"
        )
    return None


def prefix_attention(q: Array, k: Array, v: Array, *, block_size: int, **call) -> Array:
    """Causal attention by query blocks of ``block_size`` rows over their key prefixes;
    the same result as :func:`~posenc_jax.attention.dense.dense_attention`, whose keyword
    arguments it takes (after the core's checks; no contextual term or processors).

    Returns:
      ``[B, L, H, Kv]`` in q's dtype; rows with no allowed key are zeros.
    """
    q_len = q.shape[1]

    def by_blocks():
        outs = []
        for start in range(0, q_len, block_size):
            end = min(start + block_size, q_len)
            part = _rows_and_keys(call, slice(start, end), slice(0, end))
            outs.append(dense_attention(q[:, start:end], k[:, :end], v[:, :end], **part))
        return jnp.concatenate(outs, axis=1)

    if block_size >= q_len:
        return dense_attention(q, k, v, **call)
    # Reverse mode saves what either branch needs for its backward pass, zeros for the
    # branch not taken; checkpointing the fallback keeps its [B, H, L, S] weights out of
    # that (measured: 66 -> 49 ms for the blocks' forward + backward at L 256).
    follows = positions_follow_indices(call["q_positions"], call["k_positions"])
    whole = jax.checkpoint(lambda: dense_attention(q, k, v, **call))
    return jax.lax.cond(follows, by_blocks, whole)


def _rows_and_keys(call: dict, rows: slice, keys: slice) -> dict:
    """The dense backend's arguments for the queries ``rows`` and the keys ``keys``."""
    part = dict(call)
    part["q_positions"] = call["q_positions"][:, rows]
    part["k_positions"] = call["k_positions"][:, keys]
    if call.get("logit_factor") is not None:
        part["logit_factor"] = call["logit_factor"][:, rows]
    if call.get("padding_mask") is not None:
        part["padding_mask"] = call["padding_mask"][:, keys]
    if call.get("mask") is not None:
        mask = call["mask"]  # [B or 1, H or 1, L or 1, S or 1]
        mask = mask if mask.shape[2] == 1 else mask[:, :, rows]
        part["mask"] = mask if mask.shape[3] == 1 else mask[:, :, :, keys]
    if call.get("separable_bias") is not None:
        u, w = call["separable_bias"]
        part["separable_bias"] = (u[:, :, rows], w[:, :, keys])
    return part
