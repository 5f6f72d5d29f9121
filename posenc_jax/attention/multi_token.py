"""Multi-Token Attention: attention weights that read neighbouring queries, keys and heads.

Golovneva, Wang, Weston & Sukhbaatar (2025) add three components to multi-head attention,
each switchable through :class:`MTAConfig`:

1. **Key-query convolution.** Each head convolves its logit map with a learned
   ``c_q x c_k`` kernel (query axis x key axis) before the softmax,
   ``A = softmax(Mask_-inf(Conv(Mask_0(Q K^T / sqrt(d)))))``, and/or its attention weights
   after it, ``A = Mask_0(Conv(softmax(Mask_-inf(Q K^T / sqrt(d)))))`` (rows not
   renormalized). ``Mask_0`` zeroes and ``Mask_-inf`` removes every entry a query may not
   attend. The query axis is padded with ``c_q - 1`` rows on the past side only and the key
   axis with ``(c_k - 1) / 2`` columns on each side, so row i reads query rows
   ``i - c_q + 1 .. i`` and never a later query (symmetric "same" padding on the query axis
   would leak the future).
2. **Head mixing.** Heads split into groups of ``c_h`` consecutive heads; inside a group a
   learned ``c_h x c_h`` map mixes the heads' maps at every (i, j), before and/or after
   the softmax.
3. **Group normalization.** Each head's output is RMS-normalized over the head dimension
   (float32, learned scale shared across heads) and multiplied either by the depth factor
   ``1 - lambda_init(l)`` with ``lambda_init(l) = 0.8 - 0.6 exp(-0.3 l)`` (paper v1, from
   the DIFF Transformer) or by a per-token, per-head sigmoid gate (paper v2).

Every learned map starts at the identity (the convolution kernel is 1 at the current query
and the centre key), so an untrained layer computes standard attention; with group norm
off it equals :class:`~posenc_jax.attention.MultiHeadAttention` with the same projections.

Index convention of the kernel ``W [H, c_q, c_k]`` (PyTorch's grouped ``conv2d``, which is a
cross-correlation)::

    C[i, j] = sum_{a, b} W[a, b] S0[i + a - (c_q - 1), j + b - (c_k - 1) / 2]

The paper's theta is W flipped on both axes: ``theta[i', j'] = W[c_q-1-i', (c_k-1)/2-j']``.

Memory: the convolution needs the whole ``[B, H, L, S]`` logit and weight maps, so a
layer with it runs dense, O(L^2) per head; a chunked path (``block_size``) is an error.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from posenc_jax._checks import is_integer
from posenc_jax.attention.multi_head import AttentionInputs, AttentionLayer, MultiHeadAttention
from posenc_jax.encodings.parameters import Dims, Parameter
from posenc_jax.typing import Array

GROUP_NORM_KINDS = ("depth", "gate")

# The kernels and head maps sit in float32 logit/probability arithmetic; on accelerators
# the default precision may round float32 operands to TF32/bf16, which would break the
# exact identity at initialization.
_EXACT = jax.lax.Precision.HIGHEST


def _check_kernel_size(name: str, size: tuple[int, int] | None) -> None:
    if size is None:
        return
    valid = (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(is_integer(s) and s > 0 for s in size)
    )
    if not valid or size[1] % 2 == 0:
        raise ValueError(
            f"{name}={size!r}; give (c_q, c_k) with positive integers and c_k odd (the key "
            "window is centred), or None to switch this convolution off."
        )


@dataclasses.dataclass(frozen=True)
class MTAConfig:
    """Which Multi-Token Attention components are on, and their sizes.

    Attributes:
      pre_softmax_kernel: ``(c_q, c_k)`` of the key-query convolution on the logits, or
        None for none. ``c_k`` must be odd (the key window is centred).
      post_softmax_kernel: ``(c_q, c_k)`` of the convolution on the attention weights, or
        None. Independent of the pre-softmax kernel; both may be on.
      conv_layers: 0-based indices of the layers that get the key-query convolution(s);
        None means every layer. The paper's language models use every 4th layer from the
        third (:func:`every_fourth_layer`), its toy task every layer. Head mixing and group
        norm apply in every layer regardless.
      pre_softmax_head_group: ``c_h`` of head mixing on the logits, or None for none.
      post_softmax_head_group: ``c_h`` of head mixing on the attention weights, or None.
      group_norm: None, "depth" (RMS norm times ``1 - lambda_init(l)``, paper v1) or
        "gate" (RMS norm times ``sigmoid(w . o + b)``, paper v2).
      norm_eps: epsilon of the RMS normalization.

    Defaults are the paper's toy-task setting: a pre-softmax 2 x 9 convolution in every
    layer, no head mixing, no group norm.

    References:
      Golovneva et al., "Multi-Token Attention", arXiv:2504.00927, 2025.
    """

    pre_softmax_kernel: tuple[int, int] | None = (2, 9)
    post_softmax_kernel: tuple[int, int] | None = None
    conv_layers: tuple[int, ...] | None = None
    pre_softmax_head_group: int | None = None
    post_softmax_head_group: int | None = None
    group_norm: str | None = None
    norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("pre_softmax_kernel", "post_softmax_kernel"):
            size = getattr(self, name)
            _check_kernel_size(name, size)
            if size is not None:
                object.__setattr__(self, name, tuple(size))
        if self.conv_layers is not None:
            layers = self.conv_layers
            iterable = not isinstance(layers, str | bytes) and hasattr(layers, "__iter__")
            layers = tuple(layers) if iterable else layers
            if not (iterable and all(is_integer(i) and i >= 0 for i in layers)):
                raise ValueError(
                    f"conv_layers={self.conv_layers!r}; give 0-based layer indices (integers "
                    ">= 0), or None for every layer."
                )
            object.__setattr__(self, "conv_layers", tuple(int(i) for i in layers))
        for name in ("pre_softmax_head_group", "post_softmax_head_group"):
            size = getattr(self, name)
            if size is not None and (not is_integer(size) or size <= 0):
                raise ValueError(f"{name}={size!r}; give a positive group size c_h or None.")
        if self.group_norm is not None and self.group_norm not in GROUP_NORM_KINDS:
            raise ValueError(
                f"group_norm={self.group_norm!r}; valid: None, 'depth' (v1 depth scaling) or "
                "'gate' (v2 sigmoid gate)."
            )
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be positive, got {self.norm_eps}.")

    def convolves(self, layer_index: int) -> bool:
        """Whether layer ``layer_index`` (0-based) gets a key-query convolution."""
        if self.pre_softmax_kernel is None and self.post_softmax_kernel is None:
            return False
        return self.conv_layers is None or layer_index in self.conv_layers


def every_fourth_layer(num_layers: int) -> tuple[int, ...]:
    """The paper's convolution layers: 2, 6, 10, ... below ``num_layers`` (0-based).

    References:
      Golovneva et al., 2025, Section 4 (MTA in every 4th layer); the released configs use
      ``mta_layers: 2,6,10,...``.
    """
    return tuple(range(2, num_layers, 4))


def depth_scale(layer_index: int) -> float:
    """``1 - lambda_init(l)`` with ``lambda_init(l) = 0.8 - 0.6 exp(-0.3 l)``, l 0-based.

    References:
      Ye et al., "Differential Transformer", arXiv:2410.05258, 2024 (Eq. for
      ``lambda_init``, there with a 1-based ``l - 1``); Golovneva et al., 2025 (v1 group
      normalization with depth scaling).
    """
    if layer_index < 0:
        raise ValueError(f"layer_index must be >= 0 (0-based), got {layer_index}.")
    return 1.0 - (0.8 - 0.6 * math.exp(-0.3 * layer_index))


def key_query_convolution(maps: Array, kernel: Array) -> Array:
    """Per-head causal 2D convolution of ``maps [B, H, L, S]`` with ``kernel [H, c_q, c_k]``.

    ``out[i, j] = sum_{a, b} kernel[a, b] maps[i + a - (c_q - 1), j + b - (c_k - 1) / 2]``
    with zeros outside the map: the query axis is padded on the past side only, the key
    axis symmetrically. The caller must zero (Mask_0) entries a query may not attend first.

    Args:
      maps: float32 ``[B, H, L, S]`` logits or attention weights.
      kernel: ``[H, c_q, c_k]``, ``c_k`` odd.

    Returns:
      float32 ``[B, H, L, S]``.

    References:
      Golovneva et al., "Multi-Token Attention", 2025, Section 2.1.
    """
    num_heads, q_kernel, k_kernel = kernel.shape
    if maps.ndim != 4 or maps.shape[1] != num_heads:
        raise ValueError(
            f"maps must be [B, H, L, S] with H={num_heads} (the kernel's heads); got {maps.shape}."
        )
    if k_kernel % 2 == 0:
        raise ValueError(f"the key kernel size must be odd (centred window), got {k_kernel}.")
    half = (k_kernel - 1) // 2
    return jax.lax.conv_general_dilated(
        maps.astype(jnp.float32),
        kernel.astype(jnp.float32)[:, None],
        window_strides=(1, 1),
        padding=((q_kernel - 1, 0), (half, half)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
        feature_group_count=num_heads,
        precision=_EXACT,
    )


def mix_heads(maps: Array, kernel: Array) -> Array:
    """Mixes ``maps [B, H, L, S]`` within groups of ``c_h`` consecutive heads.

    ``out[g * c_h + o] = sum_p kernel[g, p, o] maps[g * c_h + p]`` at every (i, j), with
    ``kernel [H / c_h, c_h, c_h]`` (input head first, as in the official head convolution).

    References:
      Golovneva et al., "Multi-Token Attention", 2025, Section 2.2.
    """
    batch, num_heads, q_len, k_len = maps.shape
    groups, group_size = kernel.shape[0], kernel.shape[1]
    grouped = maps.reshape(batch, groups, group_size, q_len, k_len)
    mixed = jnp.einsum("BGPLS,GPO->BGOLS", grouped, kernel.astype(jnp.float32), precision=_EXACT)
    return mixed.reshape(batch, num_heads, q_len, k_len)


def mta_parameters(
    config: MTAConfig, layer_index: int, dims: Dims, dtype=jnp.float32
) -> dict[str, Parameter]:
    """The parameters a Multi-Token Attention layer adds to multi-head attention.

    Every learned map starts at the identity: a convolution kernel ``[H, c_q, c_k]`` is 1
    at the current query and the centre key, a head-mixing map ``[H / c_h, c_h, c_h]`` is
    the identity per group; group norm's scale ``[K]`` starts at 1, its gate (``"gate"``)
    at ``K`` weights truncated-normal with std ``D^-0.5`` and a bias of 0.

    Args:
      config: the layer's :class:`MTAConfig`.
      layer_index: 0-based; decides whether the layer convolves.
      dims: the layer's ``num_heads``, ``head_dim`` and ``d_model``.
      dtype: the parameters' dtype.

    Returns:
      name -> :class:`~posenc_jax.encodings.parameters.Parameter`, in creation order.
    """
    specs = {}
    convolves = config.convolves(layer_index)
    for side in ("pre", "post"):
        size = getattr(config, f"{side}_softmax_kernel")
        if convolves and size is not None:
            shape = (dims.num_heads, *size)
            specs[f"{side}_softmax_kernel"] = Parameter(shape, _identity_kernel, dtype)
        group = getattr(config, f"{side}_softmax_head_group")
        if group is not None:
            shape = (dims.num_heads // group, group, group)
            specs[f"{side}_softmax_head_mix"] = Parameter(shape, _identity_maps, dtype)
    if config.group_norm is not None:
        head_dim = dims.head_dim
        specs["group_norm_scale"] = Parameter((head_dim,), nn.initializers.ones, dtype)
        if config.group_norm == "gate":
            # The official gate is nn.Linear(head_dim, 1) shared across heads, weights
            # truncated-normal with std D^-0.5 at +-3 std. Its bias is left uninitialized
            # there; 0 (an initial gate of 0.5) is the choice made here.
            stddev = dims.d_model**-0.5
            gate_init = nn.initializers.truncated_normal(stddev, lower=-3.0, upper=3.0)
            specs["gate_kernel"] = Parameter((head_dim,), gate_init, dtype)
            specs["gate_bias"] = Parameter((), nn.initializers.zeros, dtype)
    return specs


def _identity_kernel(key, shape, dtype=jnp.float32):
    """``[H, c_q, c_k]``: 1 at the current query (last row) and the centre key."""
    del key
    _, q_kernel, k_kernel = shape
    return jnp.zeros(shape, dtype).at[:, q_kernel - 1, k_kernel // 2].set(1)


def _identity_maps(key, shape, dtype=jnp.float32):
    """``[groups, c_h, c_h]``: the identity in every group."""
    del key
    return jnp.broadcast_to(jnp.eye(shape[1], dtype=dtype), shape)


def check_layer(
    config: MTAConfig,
    *,
    num_heads: int,
    causal: bool,
    layer_index: int,
    decode: bool,
    self_attention: bool,
) -> None:
    """Trace-time errors for requests Multi-Token Attention cannot honour."""
    if decode:
        raise ValueError(
            "decode=True needs multi-head attention: a key/value cache for Multi-Token "
            "Attention would also need past score rows."
        )
    if layer_index < 0:
        raise ValueError(f"layer_index must be >= 0 (0-based), got {layer_index}.")
    if config.convolves(layer_index):
        if not causal:
            raise ValueError(
                f"layer {layer_index} has a key-query convolution, which is defined "
                "for causal attention only (it reads past query rows); build it with "
                "causal=True, or leave this layer out of MTAConfig.conv_layers."
            )
        if not self_attention:
            raise ValueError(
                f"layer {layer_index} has a key-query convolution, which needs "
                "self-attention (queries and keys on one sequence axis); call it without "
                "a context, or leave this layer out of MTAConfig.conv_layers."
            )
    for name in ("pre_softmax_head_group", "post_softmax_head_group"):
        size = getattr(config, name)
        if size is not None and num_heads % size:
            raise ValueError(
                f"MTAConfig.{name}={size} must divide num_heads={num_heads} (heads "
                "are mixed within groups of consecutive heads)."
            )


def map_terms(config: MTAConfig, layer_index: int, inputs: AttentionInputs, params: dict) -> dict:
    """The sequence-order mask of a convolving layer and the four processors.

    Pre-softmax: ``Conv(Mask_0(.))``, then head mixing, then ``Mask_-inf`` inside the
    softmax. Post-softmax: ``Mask_0(Conv(.))``, then head mixing (re-masked, so a
    head-specific mask is never mixed into another head); rows are not renormalized.

    Args:
      config: the layer's :class:`MTAConfig`.
      layer_index: 0-based index of the layer.
      inputs: the attention call's inputs.
      params: the values of :func:`mta_parameters`.
    """
    mask = inputs.mask
    if config.convolves(layer_index):
        q_len, k_len = inputs.q.shape[1], inputs.k.shape[1]
        sequence_order = jnp.tri(q_len, k_len, dtype=jnp.bool_)[None, None]
        mask = sequence_order if mask is None else jnp.logical_and(mask, sequence_order)
    pre = (params.get("pre_softmax_kernel"), params.get("pre_softmax_head_mix"))
    post = (params.get("post_softmax_kernel"), params.get("post_softmax_head_mix"))

    def logits_fn(logits, allowed):
        conv, heads = pre
        if conv is not None:
            logits = key_query_convolution(_mask_zero(logits, allowed), conv)
        if heads is not None:
            logits = mix_heads(_mask_zero(logits, allowed), heads)
        return logits

    def weights_fn(weights, allowed):
        conv, heads = post
        if conv is not None:
            weights = _mask_zero(key_query_convolution(weights, conv), allowed)
        if heads is not None:
            weights = _mask_zero(mix_heads(weights, heads), allowed)
        return weights

    return {
        "mask": mask,
        "logit_processor": logits_fn if any(p is not None for p in pre) else None,
        "weight_processor": weights_fn if any(p is not None for p in post) else None,
    }


def group_norm(config: MTAConfig, layer_index: int, out: Array, params: dict) -> Array:
    """RMS norm of each head's float32 output ``[B, L, H, K]``, then depth factor or gate.

    Args:
      config: the layer's :class:`MTAConfig` (``group_norm`` not None).
      layer_index: 0-based index of the layer (the depth factor's ``l``).
      out: the heads' outputs ``[B, L, H, K]``.
      params: the values of :func:`mta_parameters`.

    Returns:
      float32 ``[B, L, H, K]``.
    """
    normed = out.astype(jnp.float32)
    mean_square = jnp.mean(jnp.square(normed), axis=-1, keepdims=True)
    normed = normed * jax.lax.rsqrt(mean_square + config.norm_eps)
    scale = params["group_norm_scale"].astype(jnp.float32)
    normed = normed * scale[None, None, None, :]
    if config.group_norm == "depth":
        return normed * depth_scale(layer_index)
    gate_logits = jnp.einsum("BLHK,K->BLH", normed, params["gate_kernel"].astype(jnp.float32))
    gate = jax.nn.sigmoid(gate_logits + params["gate_bias"].astype(jnp.float32))
    return normed * gate[..., None]


class MultiTokenLayer(AttentionLayer):
    """Multi-Token Attention's parameters and terms on top of :class:`AttentionLayer`,
    shared by the linen and NNX skins (a skin has a ``config``)."""

    def check_structure(self, *, self_attention: bool) -> None:
        check_layer(
            self.config,
            num_heads=self.num_heads,
            causal=self.causal,
            layer_index=self.layer_index,
            decode=self.decode,
            self_attention=self_attention,
        )

    def layer_parameters(self, dims: Dims) -> dict[str, Parameter]:
        mta = mta_parameters(self.config, self.layer_index, dims, self.param_dtype)
        return {**super().layer_parameters(dims), **mta}

    def map_terms(self, inputs: AttentionInputs, params: dict) -> dict:
        return map_terms(self.config, self.layer_index, inputs, params)

    def finish(self, out: Array, params: dict) -> Array:
        """Group normalization of each head's output (or nothing without it)."""
        if self.config.group_norm is None:
            return out
        return group_norm(self.config, self.layer_index, out, params).astype(out.dtype)


class MultiTokenAttention(MultiTokenLayer, MultiHeadAttention):
    """Multi-head attention with key-query convolution, head mixing and group norm.

    :class:`~posenc_jax.attention.MultiHeadAttention` with processors of the logit map
    (pre-softmax convolution and head mixing) and of the weights (post-softmax ones) and a
    normalization of the heads' outputs: the same call signature, the same projection
    parameters ("query", "key", "value", "out"), the same use of the encoding and the same
    dense attention core, which runs the processors between the logits and the softmax and
    after it.

    The convolution runs along the sequence axis, so it is defined for causal
    self-attention only; building a non-causal or cross-attention layer with a convolution
    is an error. In such a layer a key is attendable only if it is allowed by position
    (``k_position <= q_position``) *and* is not later in the sequence, which is the same
    thing for increasing positions and keeps the convolution causal whatever the positions.

    Memory is O(L^2) per head (the full maps are materialized, as in the paper): a layer
    with a convolution or head mixing runs dense, and asking for tiles is an error.

    Attributes (besides MultiHeadAttention's):
      config: the :class:`MTAConfig`.
      layer_index: 0-based index of this layer; decides (with ``config.conv_layers``)
        whether it convolves, and sets the depth factor of ``group_norm="depth"``.
      temperature: an :class:`AttentionTemperature` whose per-query factor multiplies the
        logits right before the softmax (after the convolution and head mixing, so it
        stays a softmax temperature); None for none.

    References:
      Golovneva, Wang, Weston & Sukhbaatar, "Multi-Token Attention", arXiv:2504.00927,
      2025; official code facebookresearch/RAM ``projects/mta/mta_transformer.py``.
    """

    config: MTAConfig = MTAConfig()


def _mask_zero(maps: Array, allowed: Array | None) -> Array:
    """Mask_0: zero every entry a query may not attend (no-op when everything is allowed)."""
    return maps if allowed is None else jnp.where(allowed, maps, 0.0)
