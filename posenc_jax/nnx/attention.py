"""Multi-head and Multi-Token Attention as Flax NNX modules.

The computation is :class:`~posenc_jax.attention.multi_head.AttentionLayer`'s (and
:class:`~posenc_jax.attention.multi_token.MultiTokenLayer`'s), the one the linen modules
run; these classes build the parameters at construction, under the linen modules' names
("query", "key", "value", "out", the encoding's under "position_encoding", Multi-Token
Attention's kernels), and keep the decoding cache in ``nnx.Cache`` variables.
"""

import functools
from typing import Any

import jax.numpy as jnp
from flax import nnx

from posenc_jax.attention import cache
from posenc_jax.attention.multi_head import (
    AttentionLayer,
    check_direction,
    check_heads,
    resolve_head_dim,
)
from posenc_jax.attention.multi_token import MTAConfig, MultiTokenLayer
from posenc_jax.attention.ops import Window, as_window
from posenc_jax.attention.stick_breaking import StickBreaking
from posenc_jax.attention.temperature import AttentionTemperature
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.parameters import Dims
from posenc_jax.nnx.encodings import Encoding
from posenc_jax.nnx.parameters import create_parameters, parameter_values
from posenc_jax.typing import Array

#: The projections' default kernel initializer (linen's ``DenseGeneral`` default too).
LECUN_NORMAL = nnx.initializers.lecun_normal()


class MultiHeadAttention(AttentionLayer, nnx.Module):
    """Self- or cross-attention with grouped key/value heads and a positional encoding.

    The NNX form of :class:`posenc_jax.attention.MultiHeadAttention` (see it for what each
    option does): the same computation, the same parameter names and shapes, dimensions
    given at construction as NNX layers take them.

    Example::

        attention = pj.nnx.MultiHeadAttention(
            num_heads=4, in_features=64, causal=True,
            encoding=pj.nnx.encodings.get("rope"), rngs=nnx.Rngs(0),
        )
        y = attention(x, q_positions=positions)  # x [B, L, 64]; the arguments of a call
        # are those of the linen module (AttentionLayer.__call__)

    Args:
      num_heads: query heads H.
      in_features: D, the width of the inputs ``x``.
      num_kv_heads: key/value heads G (default H); H must be a multiple of G.
      in_kv_features: the width of a cross-attention ``context`` (default ``in_features``).
      head_dim: K (default ``in_features // num_heads``).
      out_features: output width (default ``in_features``).
      causal: forbid attending to keys at later positions.
      encoding: an encoding definition (``pj.nnx.encodings.get(name)``), from which this
        layer builds its own :class:`~posenc_jax.nnx.Encoding` (its parameters under
        ``position_encoding``); or a built :class:`~posenc_jax.nnx.Encoding`, used as it
        is and shared with whoever else holds it; None: no position in this layer.
      use_bias: biases in the projections.
      dtype: computation dtype of the projections (softmax is always float32).
      param_dtype: parameter dtype.
      kernel_init: initializer of the projection kernels.
      temperature: an :class:`~posenc_jax.attention.AttentionTemperature`, or None.
      block_size: tile edge of chunked attention.
      implementation: "auto", "dense", "chunked", "prefix", "jax" or "cudnn".
      decode: keep a key/value cache for autoregressive decoding; call
        :meth:`init_cache` before the first call, then feed one chunk of tokens per call
        with their positions.
      layer_index: 0-based index of this layer in its stack (for the hook context).
      window: a :class:`~posenc_jax.attention.Window` or an int (sliding window), or None.
      attention_sink: a learned sink logit per head in the softmax normalizer.
      stick_breaking: a :class:`~posenc_jax.attention.StickBreaking` (stick-breaking
        weights instead of a softmax), or None.
      streaming: with ``decode``, a StreamingLLM cache
        (:class:`~posenc_jax.attention.cache.Streaming`), or None.
      rngs: the parameters' random keys.
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        *,
        num_kv_heads: int | None = None,
        in_kv_features: int | None = None,
        head_dim: int | None = None,
        out_features: int | None = None,
        causal: bool = False,
        encoding: PositionalEncoding | Encoding | None = None,
        use_bias: bool = False,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        kernel_init: Any = LECUN_NORMAL,
        temperature: AttentionTemperature | None = None,
        block_size: int | None = None,
        implementation: str = "auto",
        decode: bool = False,
        layer_index: int = 0,
        window: Window | int | None = None,
        attention_sink: bool = False,
        stick_breaking: StickBreaking | None = None,
        streaming: cache.Streaming | None = None,
        rngs: nnx.Rngs,
    ):
        kv_heads = num_kv_heads or num_heads
        check_heads(num_heads, kv_heads)
        head_dim = resolve_head_dim(head_dim, in_features, num_heads)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.in_features, self.out_features = in_features, out_features
        self.causal, self.decode, self.layer_index = causal, decode, layer_index
        self.temperature, self.block_size = temperature, block_size
        self.implementation, self.window, self.streaming = implementation, window, streaming
        self.attention_sink, self.stick_breaking = attention_sink, stick_breaking
        self.dtype, self.param_dtype = dtype, param_dtype
        linear = functools.partial(
            nnx.LinearGeneral,
            use_bias=use_bias,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=kernel_init,
            rngs=rngs,
        )
        kv_features = in_kv_features or in_features
        self.query = linear(in_features, (num_heads, head_dim))
        self.key = linear(kv_features, (kv_heads, head_dim))
        self.value = linear(kv_features, (kv_heads, head_dim))
        self.out = linear((num_heads, head_dim), out_features or in_features, axis=(-2, -1))
        check_direction(encoding, causal)
        if isinstance(encoding, PositionalEncoding):
            encoding = Encoding(
                encoding,
                d_model=in_features,
                num_heads=num_heads,
                head_dim=head_dim,
                places=("attention",),
                rngs=rngs,
            )
        self.position_encoding = encoding
        dims = Dims(
            d_model=in_features,
            num_heads=num_heads,
            head_dim=head_dim,
            given_by=type(self).__name__,
        )
        self._parameter_names = create_parameters(self, self.layer_parameters(dims), rngs)

    def init_cache(self, batch_size: int, length: int, dtype: Any = None) -> None:
        """An empty key/value cache for ``batch_size`` sequences of up to ``length`` tokens
        (a windowed layer keeps ``window`` slots), of the projections' dtype by default."""
        if not self.decode:
            raise ValueError("init_cache needs a layer built with decode=True.")
        capacity = cache.cache_capacity(length, as_window(self.window), self.streaming)
        kv_heads = self.num_kv_heads or self.num_heads
        encoding = self.position_encoding
        key_dim = self.head_dim
        if encoding is not None and self.streaming is None:  # streaming caches keys unrotated
            key_dim = encoding.rotated_width(self.head_dim)
        decays = encoding is not None and encoding.uses_hook("decay")
        empty = cache.empty_cache(
            batch_size,
            capacity,
            kv_heads,
            key_dim,
            dtype or self.dtype,
            value_dim=self.head_dim,
            decay_heads=self.num_heads if decays else None,
        )
        for name, value in cache.named_arrays(empty).items():
            setattr(self, name, nnx.Cache(value))

    # The NNX skin: parameters built at construction, the cache in nnx.Cache variables.

    def project(self, name: str, x: Array, features, axis) -> Array:
        del features, axis  # fixed at construction
        layer = getattr(self, name)
        width = x.shape[-len(layer.in_features) :]
        if tuple(width) != layer.in_features:
            raise ValueError(
                f"the {name} projection of this layer takes inputs of width "
                f"{layer.in_features}, got {tuple(width)}; build the layer with "
                "in_features (and in_kv_features for a cross-attention context) to match."
            )
        return layer(x)

    def parameters_of(self, specs) -> dict:
        del specs  # created at construction, under the same names
        return parameter_values(self, self._parameter_names)

    def layer_encoding(self) -> Encoding | None:
        return self.position_encoding

    def cache_state(self, new) -> cache.KVCache:
        del new  # NNX has no init pass: init_cache makes the cache
        if not hasattr(self, cache.CACHE_NAMES.key):
            raise ValueError(
                "this layer decodes (decode=True) but has no cache: call "
                "init_cache(batch_size, length) first."
            )
        return cache.from_named(
            lambda name: getattr(self, name)[...] if hasattr(self, name) else None
        )

    def store_cache(self, state: cache.KVCache) -> None:
        for name, value in cache.named_arrays(state).items():
            getattr(self, name)[...] = value


class MultiTokenAttention(MultiTokenLayer, MultiHeadAttention):
    """Multi-head attention with key-query convolution, head mixing and group norm.

    The NNX form of :class:`posenc_jax.attention.MultiTokenAttention`: the arguments of
    :class:`MultiHeadAttention` plus ``config`` (an
    :class:`~posenc_jax.attention.MTAConfig`; None: its defaults); its kernels are
    attributes under the linen module's names.
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        *,
        config: MTAConfig | None = None,
        rngs: nnx.Rngs,
        **options,
    ):
        self.config = MTAConfig() if config is None else config
        super().__init__(num_heads, in_features, rngs=rngs, **options)
