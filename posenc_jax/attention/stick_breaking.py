"""Stick-breaking attention weights: no softmax, each key takes a share of what is left.

For query i, the keys it may attend are visited from the nearest (latest position) to the
farthest; key j breaks off ``beta_ij = sigmoid(z_ij)`` of the stick left by the keys
between it and the query:

    A_ij = sigmoid(z_ij) * prod_{j < l < i} (1 - sigmoid(z_il))

with ``z_ij`` the logit (``q_i.k_j / sqrt(d)`` plus any bias, times any temperature).
The weights sum to ``1 - prod_l (1 - sigmoid(z_il)) <= 1``; the remainder attends
nothing. In log space, ``log A_ij = log sigmoid(z_ij) - sum_{j < l < i} softplus(z_il)``
(``log(1 - sigmoid(z)) = -softplus(z)``), a sum of non-positive terms, so the weights
are computed without overflow or division.

Both backends compute it: the dense one on the whole map, the chunked one tile by tile,
visiting a query block's key tiles from the last backwards with the stick broken so far
(the running ``sum softplus(z)``) carried per row (:func:`broken_stick` is one tile's
step, the whole map being one tile).

Which keys are "between" is read from positions, as causality is: keys are ordered by
position (ties by their order in the call), so a cache's ring buffer, whose slots are not
in sequence order, gives the weights of the full pass. Only keys the query may attend
(causality, the window, padding, a mask) take or break the stick. Conventions follow the
official code (shawntan/stickbreaking-attention): the query's own key is left out by
default (``attend_current=False``; its ``sb_ref.stickbreaking`` reference masks the
diagonal) and the remainder ``1 - sum_j A_ij`` is dropped from the output (the reference
returns it beside the output; the released dolomite model adds ``rem * head_bias``, which
is not done here).

References:
  Tan, Yang, Courville, Panda & Shen, "Scaling Stick-Breaking Attention: An Efficient
  Implementation and In-depth Study", ICLR 2025 (arXiv 2410.17980), Eq. 1-2.
"""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.typing import Array


@dataclasses.dataclass(frozen=True)
class StickBreaking:
    """The stick-breaking rule of an attention call (in place of the softmax).

    Attributes:
      attend_current: whether a query's own key (the key at the query's position) takes a
        share of the stick; the official code's default leaves it out (False).
    """

    attend_current: bool = False

    def __post_init__(self):
        if not isinstance(self.attend_current, bool):
            raise ValueError(f"attend_current must be True or False, got {self.attend_current!r}.")


def stick_breaking_weights(logits: Array, allowed: Array | None, k_positions: Array) -> Array:
    """The weights ``A [B, H, L, S]`` (float32) of stick-breaking attention.

    Args:
      logits: ``z [B, H, L, S]``.
      allowed: boolean, broadcastable to ``logits``: the keys each query may attend
        (the caller has already removed the query's own key unless it attends it); None
        for every key.
      k_positions: int ``[B, S]``: the keys are visited in decreasing position.

    Returns:
      float32 ``[B, H, L, S]``; a row with no allowed key is zeros.
    """
    logits = logits.astype(jnp.float32)
    if allowed is None:
        allowed = jnp.ones((1, 1, 1, 1), jnp.bool_)
    allowed = jnp.broadcast_to(allowed, logits.shape)
    order = position_order(k_positions)[:, None, None, :]
    z = jnp.take_along_axis(logits, order, axis=-1)
    allowed = jnp.take_along_axis(allowed, order, axis=-1)
    weights, _ = broken_stick(z, allowed, jnp.zeros(z.shape[:-1], jnp.float32))
    inverse = jnp.argsort(order, axis=-1)
    return jnp.take_along_axis(weights, inverse, axis=-1)


def position_order(k_positions: Array) -> Array:
    """The order keys are visited in: by position, ties by their order in the call (int32
    ``[B, S]`` indices)."""
    return jnp.argsort(k_positions, axis=-1, stable=True).astype(jnp.int32)


def broken_stick(logits: Array, allowed: Array | None, later: Array) -> tuple[Array, Array]:
    """The weights of a run of keys in position order, and each key's break.

    Args:
      logits: ``z [..., S]``, keys in increasing position.
      allowed: boolean, broadcastable to ``logits``, or None for every key.
      later: ``[...]``, the sum of ``softplus(z)`` over the allowed keys after this run
        (0 for the run that ends at the query).

    Returns:
      ``(weights, breaks)``: ``A_j = sigmoid(z_j) exp(-(later + sum of the breaks of the
      allowed keys after j in the run))`` and ``softplus(z_j)`` (0 where not allowed).
    """
    breaks = jax.nn.softplus(logits)
    if allowed is not None:
        breaks = jnp.where(allowed, breaks, 0.0)
    weights = jnp.exp(jax.nn.log_sigmoid(logits) - (later[..., None] + after(breaks)))
    if allowed is not None:
        weights = jnp.where(allowed, weights, 0.0)
    return weights, breaks


def after(x: Array) -> Array:
    """``sum_{l > j} x_l`` for every j along the last axis (0 for the last)."""
    inclusive = jnp.flip(jnp.cumsum(jnp.flip(x, -1), axis=-1), -1)
    return jnp.concatenate([inclusive[..., 1:], jnp.zeros_like(inclusive[..., :1])], axis=-1)
