"""The one place that decides which attention backend runs a call, and says why not.

Backends (each module says what it cannot run):

* ``dense`` (:mod:`posenc_jax.attention.dense`): the full ``[B, H, L, S]`` map; runs
  everything.
* ``chunked`` (:mod:`posenc_jax.attention.chunked`): tiles with an online softmax (or
  stick-breaking's running sum), O(L) memory; any bias, masks, windows, sink logits; not a
  contextual term or processors of the full map.
* ``prefix`` (:mod:`posenc_jax.attention.prefix`): causal self-attention by query blocks,
  each the dense backend's over the keys up to its last query (5/8 of the pairs in its 4 blocks);
  not a contextual term or processors of the full map.
* ``jax`` / ``cudnn`` (:mod:`posenc_jax.attention.fused`): ``jax.nn.dot_product_attention``
  (XLA, or cuDNN's flash kernel on NVIDIA GPUs) for plain or causal softmax attention with
  at most a sliding window.

``implementation="dense"``, ``"chunked"``, ``"prefix"``, ``"jax"`` or ``"cudnn"`` forces
one (an error naming the reason when it cannot run the call); ``"auto"`` runs cuDNN on an
NVIDIA GPU when the call has no bias, contextual term, mask, processors, sink,
stick-breaking or tile size and cuDNN takes its dtype, head dimension and lengths;
otherwise chunked when a ``block_size`` is given or ``L * S`` exceeds
:data:`DENSE_MAX_LOGITS` and nothing needs the full map; prefix for causal
self-attention of at least :data:`~posenc_jax.attention.prefix.MIN_LENGTH` tokens when
nothing needs the full map; dense otherwise.
"""

import jax.numpy as jnp

from posenc_jax.attention import chunked, fused, prefix
from posenc_jax.attention.chunked import default_block_size
from posenc_jax.attention.fused import cudnn_unsupported
from posenc_jax.attention.ops import Window

IMPLEMENTATIONS = ("auto", "dense", "chunked", "prefix", "jax", "cudnn")

#: "auto" runs dense while ``L * S`` is at most this and chunked beyond it. On CPU the
#: chunked path is already faster from L = 512 (causal ALiBi attention at B = 8, H = 8,
#: K = 32: 0.08 s vs 0.12 s forward), and a Transformer evaluation at L = 2048 runs 2-10x
#: faster chunked (experiments/benchmarks/attention.py); short sequences, which fit one
#: tile, gain nothing from it and compile faster dense.
DENSE_MAX_LOGITS = 512 * 512


def check_request(implementation: str, block_size: int | None) -> None:
    """The request alone must make sense: a known implementation, a positive tile edge
    (or query block), and one only for an implementation that has them."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}.")
    if block_size is not None and (
        not isinstance(block_size, int) or isinstance(block_size, bool) or block_size <= 0
    ):
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}.")
    if implementation in ("dense", "jax", "cudnn") and block_size is not None:
        raise ValueError(
            f"block_size={block_size} asks for tiles but implementation={implementation!r}; "
            "pass block_size=None, or implementation='chunked' or 'prefix'."
        )


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
    has_processors: bool = False,
    window: Window | None = None,
    dtype: jnp.dtype = jnp.float32,
    head_dim: int = 64,
    value_dim: int | None = None,
    cudnn: bool | None = None,
    has_sink: bool = False,
    weighting: str = "softmax",
    causal: bool = False,
) -> tuple[str, int | None]:
    """Resolves (backend, block size) from the caller's request and the call.

    Args:
      implementation: "auto", "dense", "chunked", "prefix", "jax" or "cudnn".
      block_size: the requested tile edge (the query block of "prefix"); giving one with
        "auto" asks for chunked attention.
      q_len, k_len, batch, num_heads, head_dim, dtype: the call's shapes and dtype.
      value_dim: the values' width when it is not ``head_dim`` (None: the same).
      has_contextual: an encoding's contextual term (needs the full map).
      has_bias: a position bias.
      has_mask: a mask or padding.
      has_processors: processors of the logit or weight map (need the full map).
      window: the attention window, or None.
      has_sink: a learned sink logit per head.
      weighting: "softmax" or "stick_breaking" (the weights' rule).
      causal: whether the call is causal (the prefix backend runs only those).
      cudnn: whether the device runs cuDNN's flash attention (default: asked of the
        device, only when cuDNN is in question,
        :func:`~posenc_jax.attention.fused.cudnn_available`).

    Returns:
      ``(backend, block_size)``: "dense", "chunked", "prefix", "jax" or "cudnn", and the
      tile edge of a chunked run (:func:`~posenc_jax.attention.chunked.default_block_size`
      of ``batch`` and ``num_heads`` when none was given) or the query block of a prefix
      run (:func:`~posenc_jax.attention.prefix.default_block_size` of ``q_len`` when none
      was given), else None.

    Raises:
      ValueError: every "cannot run this" of the package's attention: an unknown
        implementation, a bad block size, a block size with a backend that takes none, a
        backend requested for a call it cannot run (the message says why).
    """
    check_request(implementation, block_size)
    needs_full_map = chunked.unsupported(
        has_contextual=has_contextual, has_processors=has_processors
    )
    fused_refusal = fused.unsupported(
        has_bias=has_bias,
        has_contextual=has_contextual,
        has_mask=has_mask,
        has_processors=has_processors,
        window=window,
        values_own_width=value_dim not in (None, head_dim),
        has_sink=has_sink,
        weighting=weighting,
    )

    def why_not_cudnn() -> str | None:
        return fused_refusal or cudnn_unsupported(dtype, head_dim, q_len, k_len, available=cudnn)

    if implementation in ("jax", "cudnn"):
        reason = fused_refusal or (why_not_cudnn() if implementation == "cudnn" else None)
        if reason:
            raise ValueError(
                f"implementation={implementation!r}: {reason}; use 'auto', 'dense' or "
                "'chunked'" + (", or 'jax'" if implementation == "cudnn" else "") + "."
            )
        return implementation, None
    if implementation == "dense":
        return "dense", None
    not_prefix = needs_full_map or prefix.unsupported(causal=causal, q_len=q_len, k_len=k_len)
    if implementation == "prefix":
        if not_prefix:
            raise ValueError(
                f"implementation='prefix': {not_prefix}; use 'auto', 'dense' or 'chunked'."
            )
        return "prefix", block_size or prefix.default_block_size(q_len)
    wants_chunked = implementation == "chunked" or block_size is not None
    if needs_full_map:
        if wants_chunked:
            request = (
                f"block_size={block_size}"
                if block_size is not None
                else f"implementation={implementation!r}"
            )
            raise ValueError(
                f"{request} asks for the chunked backend, but {needs_full_map}; use "
                "implementation='dense' or 'auto' with block_size=None."
            )
        return "dense", None
    if not (wants_chunked or why_not_cudnn()):
        return "cudnn", None
    if wants_chunked or q_len * k_len > DENSE_MAX_LOGITS:
        return "chunked", block_size or default_block_size(batch, num_heads)
    if not not_prefix and q_len >= prefix.MIN_LENGTH:
        return "prefix", prefix.default_block_size(q_len)
    return "dense", None
