"""The route to ``jax.nn.dot_product_attention`` (cuDNN flash attention on NVIDIA GPUs).

An encoding that adds no bias and no contextual term (NoPE, absolute, rotary) leaves
attention plain ``softmax(q k^T * scale) v``, which fused kernels compute without the
``[B, H, L, S]`` logits in memory. This module hands such calls to
``jax.nn.dot_product_attention`` while keeping the core's contract:

* Causality is by positions (``k_position <= q_position``); a fused kernel's causal flag
  is by index (query ``i`` sees keys ``0..i``). The two agree when queries and keys share
  one strictly increasing sequence of positions (``arange``, offsets, sorted randomized
  positions). That is checked at run time (``O(B L)``); ``lax.cond`` then runs the kernel
  with its causal flag, which skips the blocks above the diagonal, and otherwise with
  the mask made from the positions.
* The logit scale and a per-query temperature are folded into the queries, so a traced
  scale works with kernels that take only a static one.
* A query row with no attendable key returns zeros (the kernels would return an average
  of the values).

References:
  Dao et al., "FlashAttention", NeurIPS 2022; NVIDIA cuDNN fused attention, exposed as
  ``jax.nn.dot_product_attention(..., implementation="cudnn")``.
"""

import functools

import jax
import jax.numpy as jnp

from posenc_jax.attention.core import allowed_mask
from posenc_jax.typing import Array

#: ``implementation`` values of the core that run here, and the value each passes to
#: ``jax.nn.dot_product_attention``: "jax" its XLA implementation (any backend), "cudnn"
#: the cuDNN kernel (NVIDIA GPUs, float16 / bfloat16).
FUSED_IMPLEMENTATIONS = {"jax": "xla", "cudnn": "cudnn"}

#: What "auto" asks of a call before choosing cuDNN on a GPU: half-precision inputs and a
#: head dimension cuDNN's flash kernel takes (a multiple of 8, at most 128).
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_MAX_HEAD_DIM = 128


def cudnn_supports(dtype: jnp.dtype, head_dim: int) -> bool:
    """Whether cuDNN's flash attention takes inputs of ``dtype`` and ``head_dim``."""
    return jnp.dtype(dtype).name in CUDNN_DTYPES and (
        head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM
    )


def positions_follow_indices(q_positions: Array, k_positions: Array) -> Array:
    """Scalar bool: queries and keys share one strictly increasing sequence per row, so
    ``k_position[j] <= q_position[i]`` holds exactly when ``j <= i``."""
    if q_positions.shape != k_positions.shape:
        return jnp.asarray(False)
    shared = jnp.all(q_positions == k_positions)
    increasing = jnp.all(q_positions[:, 1:] > q_positions[:, :-1])
    return jnp.logical_and(shared, increasing)


def fused_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    mask: Array | None,
    causal: bool,
    q_positions: Array,
    k_positions: Array,
    scale: float | Array,
    logit_factor: Array | None,
    implementation: str,
) -> Array:
    """``softmax(logit_factor * scale * q k^T) v`` through ``jax.nn.dot_product_attention``.

    Args are the core's (``posenc_jax.attention.core.dot_product_attention``) after its
    checks, with ``logit_factor [B, L]`` its temperature and ``implementation`` a key of
    :data:`FUSED_IMPLEMENTATIONS`. Returns ``[B, L, H, K]`` in q's dtype.
    """
    factor = scale if logit_factor is None else scale * logit_factor[:, :, None, None]
    q = (q.astype(jnp.float32) * factor).astype(q.dtype)
    attend = functools.partial(
        jax.nn.dot_product_attention,
        q,
        k,
        v,
        scale=1.0,
        implementation=FUSED_IMPLEMENTATIONS[implementation],
    )
    allowed = allowed_mask(q_positions, k_positions, mask=mask, causal=causal)
    if allowed is None:
        return attend()
    if causal:
        out = jax.lax.cond(
            positions_follow_indices(q_positions, k_positions),
            lambda: attend(mask=mask, is_causal=True),
            lambda: attend(mask=allowed),
        )
    else:
        out = attend(mask=allowed)
    # [B, 1 or H, L] -> [B, L, 1 or H, 1]: zero the rows with nothing to attend.
    has_key = jnp.any(allowed, axis=-1).transpose(0, 2, 1)[..., None]
    return jnp.where(has_key, out, 0).astype(q.dtype)
