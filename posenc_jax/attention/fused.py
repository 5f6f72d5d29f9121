"""The route to ``jax.nn.dot_product_attention`` (cuDNN flash attention on NVIDIA GPUs).

An encoding that adds no bias and no contextual term (NoPE, absolute, rotary) leaves
attention plain ``softmax(q k^T * scale) v``, which fused kernels compute without the
``[B, H, L, S]`` logits in memory. This module hands such calls, when they carry no mask,
to ``jax.nn.dot_product_attention`` while keeping the core's contract:

* Causality is by positions (``k_position <= q_position``); a fused kernel's causal flag
  is by index (query ``i`` sees keys ``0..i``). The two agree when queries and keys share
  one strictly increasing sequence of positions (``arange``, offsets, sorted randomized
  positions). That is checked at run time (``O(B L)``); ``lax.cond`` then runs the kernel
  with its causal flag, which skips the tiles above the diagonal, and otherwise the
  package's chunked path, which reads causality from the positions. No mask is ever
  handed to the kernel: cuDNN turns one into a dense bias, which costs ``O(L S)``
  memory, needs it at full query length, and does not follow ``vmap`` over seeds.
* The logit scale and a per-query temperature are folded into the queries, so a traced
  scale works with kernels that take only a static one.

References:
  Dao et al., "FlashAttention", NeurIPS 2022; NVIDIA cuDNN fused attention, exposed as
  ``jax.nn.dot_product_attention(..., implementation="cudnn")``.
"""

import functools

import jax
import jax.numpy as jnp

from posenc_jax.attention.chunked import chunked_attention, default_block_size
from posenc_jax.attention.ops import Window, positions_follow_indices
from posenc_jax.typing import Array

#: ``implementation`` values of the core that run here, and the value each passes to
#: ``jax.nn.dot_product_attention``: "jax" its XLA implementation (any backend), "cudnn"
#: the cuDNN kernel (NVIDIA GPUs, float16 / bfloat16).
FUSED_IMPLEMENTATIONS = {"jax": "xla", "cudnn": "cudnn"}

#: What cuDNN's flash attention takes (jax's checks, ``jax/_src/cudnn``): half-precision
#: inputs; a head dimension that is a multiple of 8, at most 128 before Hopper (256 from
#: Hopper on; 128 is asked everywhere); even lengths when training; compute capability 8.0.
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_MAX_HEAD_DIM = 128
CUDNN_MIN_COMPUTE_CAPABILITY = 8.0


def default_device() -> jax.Device:
    """The device a call without placement runs on: the one set by ``jax.default_device``
    (a device or a platform name), else the first of the default backend."""
    chosen = jax.config.jax_default_device
    if chosen is None:
        return jax.devices()[0]
    if isinstance(chosen, str):
        return jax.devices(chosen)[0]
    return chosen


def cudnn_available() -> bool:
    """Whether the default device is an NVIDIA GPU that runs cuDNN's flash attention."""
    device = default_device()
    if device.platform != "gpu" or "cuda" not in device.client.platform_version.lower():
        return False
    return float(getattr(device, "compute_capability", 0)) >= CUDNN_MIN_COMPUTE_CAPABILITY


def cudnn_unsupported(
    dtype: jnp.dtype, head_dim: int, q_len: int, k_len: int, *, available: bool | None = None
) -> str | None:
    """Why cuDNN's flash attention cannot run these inputs here, or None if it can.
    ``available`` says whether the device runs it (default: :func:`cudnn_available`,
    asked first)."""
    if not (cudnn_available() if available is None else available):
        return (
            "it needs an NVIDIA GPU of compute capability 8.0 or newer, and the default "
            f"device is {default_device().device_kind}"
        )
    if jnp.dtype(dtype).name not in CUDNN_DTYPES:
        return f"inputs must be bfloat16 or float16, got {jnp.dtype(dtype).name}"
    if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
        return f"the head dimension must be a multiple of 8 up to 128, got {head_dim}"
    if q_len % 2 or k_len % 2:
        return f"the lengths must be even for training, got L={q_len}, S={k_len}"
    return None


def unsupported(
    *,
    has_bias: bool,
    has_contextual: bool,
    has_mask: bool,
    has_processors: bool,
    window,
    has_sink: bool = False,
    weighting: str = "softmax",
    values_own_width: bool = False,
) -> str | None:
    """Why ``jax.nn.dot_product_attention`` cannot compute a call, or None: it takes plain
    or causal softmax attention and a sliding window, nothing added to the logits or the
    normalizer, and values as wide as the keys."""
    extra = [
        name
        for name, present in (
            ("values of another width than the keys", values_own_width),
            ("a position bias", has_bias),
            ("a contextual term", has_contextual),
            ("a mask", has_mask),
            ("processors of the logit map", has_processors),
            ("a sink logit", has_sink),
            (f"{weighting} weights", weighting != "softmax"),
            ("a chunked local window", window is not None and window.kind != "sliding"),
        )
        if present
    ]
    if extra:
        return (
            "it runs jax.nn.dot_product_attention on plain or causal attention (with a "
            f"sliding window), but this call has {' and '.join(extra)}"
        )
    return None


def fused_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    causal: bool,
    q_positions: Array,
    k_positions: Array,
    scale: float | Array,
    logit_factor: Array | None,
    implementation: str,
    window: Window | None = None,
) -> Array:
    """``softmax(logit_factor * scale * q k^T) v`` through ``jax.nn.dot_product_attention``.

    Args are the core's (``posenc_jax.attention.core.dot_product_attention``) after its
    checks, with ``logit_factor [B, L]`` its temperature, ``implementation`` a key of
    :data:`FUSED_IMPLEMENTATIONS` and ``window`` None or a sliding window (the kernel's
    ``local_window_size``, by index: it holds where positions follow the indices).
    Returns ``[B, L, H, K]`` in q's dtype.
    """

    def by_positions():
        return chunked_attention(
            q,
            k,
            v,
            bias_fn=None,
            mask=None,
            causal=causal,
            q_positions=q_positions,
            k_positions=k_positions,
            scale=scale,
            block_size=default_block_size(q.shape[0], q.shape[2]),
            logit_factor=logit_factor,
            window=window,
        )

    if (causal or window is not None) and q_positions.shape != k_positions.shape:
        return by_positions()  # e.g. decoding against a cache
    factor = scale if logit_factor is None else scale * logit_factor[:, :, None, None]
    local = None
    if window is not None:
        local = (window.size - 1, 0 if causal else window.size - 1)
    attend = functools.partial(
        jax.nn.dot_product_attention,
        (q.astype(jnp.float32) * factor).astype(q.dtype),
        k,
        v,
        scale=1.0,
        implementation=FUSED_IMPLEMENTATIONS[implementation],
        local_window_size=local,
    )
    if not causal and window is None:
        return attend()
    by_indices = functools.partial(attend, is_causal=causal)
    follows = positions_follow_indices(q_positions, k_positions)
    if window is not None:
        # By index a window holds only for consecutive positions (p_{i+1} = p_i + 1).
        follows = jnp.logical_and(follows, jnp.all(q_positions[:, 1:] - q_positions[:, :-1] == 1))
    return jax.lax.cond(follows, by_indices, by_positions)
