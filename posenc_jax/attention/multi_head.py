"""Multi-head attention as a Flax linen module that calls an encoding's hooks."""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from posenc_jax._checks import as_batched_positions, check_values
from posenc_jax.attention.core import dot_product_attention
from posenc_jax.attention.ops import Window, as_window
from posenc_jax.attention.temperature import AttentionTemperature
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.context import HookContext
from posenc_jax.typing import Array

#: Position of a cache slot not yet written: later than any query, so the causal rule
#: (key position <= query position) hides it without a separate validity mask.
EMPTY_CACHE_POSITION = 2**30


def check_heads(num_heads: int, num_kv_heads: int) -> None:
    """Head counts must be positive and H a multiple of G."""
    if num_heads <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(
            f"num_heads={num_heads} must be a positive multiple of num_kv_heads={num_kv_heads} "
            "(num_kv_heads=num_heads is multi-head, 1 is multi-query, in between is grouped)."
        )


def bind_layer_encoding(
    layer: nn.Module, encoding: PositionalEncoding | None, *, causal: bool, shared: bool
) -> PositionalEncoding | None:
    """The encoding an attention layer calls.

    The same encoding instance is usually handed to every layer, and Flax would share one
    bound instance between them; so by default each layer binds a fresh clone and its
    parameters live under the layer. With ``shared``, the instance is used as given: it is
    bound elsewhere (once per stack) and every layer reads its parameters.

    Raises:
      ValueError: a causal-only encoding (xPos, CoPE) in non-causal attention.
    """
    if encoding is None:
        return None
    if encoding.causal_only and not causal:
        raise ValueError(
            f"encoding {type(encoding).__name__} is defined for causal attention only; "
            "build the attention with causal=True or choose another encoding."
        )
    return encoding if shared else encoding.clone(parent=layer, name="position_encoding")


class AttentionInputs(NamedTuple):
    """Queries, keys and values of one attention call, with its positions and masks."""

    q: Array  # [B, L, H, K]
    k: Array  # [B, S, G, K]
    v: Array  # [B, S, G, K]
    q_positions: Array  # [B, L]
    k_positions: Array  # [B, S]
    mask: Array | None  # broadcastable to [B, H, L, S]
    padding_mask: Array | None  # [B, S], False on padded keys
    self_attention: bool
    context: HookContext  # what the encoding's hooks are given


def _dense(layer: nn.Module, features, name: str, axis=-1) -> nn.DenseGeneral:
    return nn.DenseGeneral(
        features,
        axis=axis,
        use_bias=layer.use_bias,
        dtype=layer.dtype,
        param_dtype=layer.param_dtype,
        kernel_init=layer.kernel_init,
        name=name,
    )


def project_inputs(
    layer: nn.Module,
    x: Array,
    context: Array | None,
    *,
    q_positions: Array | None,
    k_positions: Array | None,
    mask: Array | None,
    padding_mask: Array | None,
) -> AttentionInputs:
    """The front every attention layer shares: checks, positions, padding, projections.

    Called from the compact ``__call__`` of ``layer`` (a module with the fields of
    :class:`MultiHeadAttention`), so its "query", "key" and "value" projections are that
    layer's parameters. Key positions default to the query positions in self-attention
    and to ``arange(S)`` in cross-attention. A ``padding_mask [B, S]`` marks padded keys
    (and, in self-attention, padded queries) in the hook context.
    """
    num_kv_heads = layer.num_kv_heads or layer.num_heads
    check_heads(layer.num_heads, num_kv_heads)
    self_attention = context is None
    context = x if self_attention else context
    if x.ndim != 3 or context.ndim != 3:
        raise ValueError(f"inputs must be [B, L, D]; got x {x.shape} and context {context.shape}.")
    batch, q_len, features = x.shape
    k_len = context.shape[1]
    head_dim = layer.head_dim or features // layer.num_heads
    if head_dim <= 0:
        raise ValueError(f"head_dim must be positive; got {head_dim} for D={features}.")

    q_positions = as_batched_positions(q_positions, batch, q_len, "q_positions")
    if k_positions is None and self_attention:
        k_positions = q_positions
    k_positions = as_batched_positions(k_positions, batch, k_len, "k_positions")
    if padding_mask is not None:
        if padding_mask.shape != (batch, k_len):
            raise ValueError(
                f"padding_mask has shape {padding_mask.shape}; expected [B, S] = "
                f"[{batch}, {k_len}]."
            )
        padding_mask = padding_mask.astype(jnp.bool_)
    hook_context = HookContext(
        q_positions=q_positions,
        k_positions=k_positions,
        q_valid=padding_mask if self_attention else None,
        k_valid=padding_mask,
        inputs=x,
        layer_index=layer.layer_index,
    )
    return AttentionInputs(
        q=_dense(layer, (layer.num_heads, head_dim), "query")(x),
        k=_dense(layer, (num_kv_heads, head_dim), "key")(context),
        v=_dense(layer, (num_kv_heads, head_dim), "value")(context),
        q_positions=q_positions,
        k_positions=k_positions,
        mask=mask,
        padding_mask=padding_mask,
        self_attention=self_attention,
        context=hook_context,
    )


def project_output(layer: nn.Module, out: Array, features: int) -> Array:
    """The output projection ``[B, L, H, K] -> [B, L, out_features or D]`` of ``layer``."""
    return _dense(layer, layer.out_features or features, "out", axis=(-2, -1))(out)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with grouped key/value heads and a positional encoding.

    Self-attention when called with ``x`` only; encoder-decoder cross-attention when a
    ``context`` is given (queries from ``x``, keys and values from ``context``). The
    encoding's ``rotate``, ``bias_fn`` and ``contextual`` hooks are applied with the
    explicit positions and the hook context; the module never asks which encoding it holds,
    only what it needs (``causal_only``). Cross-attention in the original Transformer
    carries no position (source and target positions are not comparable), so models build
    it with ``encoding=None``.

    :class:`~posenc_jax.attention.MultiTokenAttention` is this module with processors of
    the logit and weight maps and a normalization of the output: a subclass overrides
    :meth:`map_terms` and :meth:`finish` and shares everything else.

    Attributes:
      num_heads: query heads H.
      num_kv_heads: key/value heads G (default H); H must be a multiple of G.
      head_dim: K (default ``D // H``).
      out_features: output width (default the input width D).
      causal: forbid attending to keys at later positions.
      encoding: a :class:`PositionalEncoding`; None means no position in this layer.
      use_bias: biases in the projections.
      dtype: computation dtype of the projections (softmax is always float32).
      param_dtype: parameter dtype.
      temperature: an :class:`AttentionTemperature` multiplying the logits by a
        length-dependent factor (log-length scaling); None (default) for none.
      block_size: tile edge of chunked attention; giving one asks for the chunked path.
      implementation: "auto" (default), "dense", "chunked", "jax" or "cudnn"; the router
        (:mod:`posenc_jax.attention.router`) decides and explains any refusal.
      decode: keep a key/value cache (Flax collection "cache") for autoregressive
        decoding. The first call (``init``) sizes the cache to its input length; each later
        call appends its keys, values and positions and attends to everything cached. The
        cache offset is nothing but the positions passed in. A windowed layer keeps only
        the last ``window`` keys, in a ring buffer whose cached positions say what is where.
      shared_encoding: ``encoding`` is already bound elsewhere (e.g. once per stack) and
        every layer given it reads the same parameters, as T5 shares its bias table
        across layers; False (default) gives this layer its own copy.
      layer_index: 0-based index of this layer in its stack, passed to the encoding's
        hooks in their context.
      window: a :class:`~posenc_jax.attention.ops.Window` (sliding or chunked local) or
        an int w (a sliding window of w keys: positions ``p - w < q <= p`` when causal);
        None (default) attends every key.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Shazeer, "Fast Transformer
      Decoding" (MQA), 2019; Ainslie et al., "GQA", EMNLP 2023.
    """

    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    out_features: int | None = None
    causal: bool = False
    encoding: PositionalEncoding | None = None
    use_bias: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.lecun_normal()
    temperature: AttentionTemperature | None = None
    block_size: int | None = None
    implementation: str = "auto"
    decode: bool = False
    shared_encoding: bool = False
    layer_index: int = 0
    window: Window | int | None = None

    @nn.compact
    def __call__(
        self,
        x: Array,
        context: Array | None = None,
        *,
        q_positions: Array | None = None,
        k_positions: Array | None = None,
        mask: Array | None = None,
        padding_mask: Array | None = None,
    ) -> Array:
        """Attends from ``x [B, L, D]`` to ``context [B, S, D]`` (default: ``x``).

        Args:
          x: query inputs ``[B, L, D]``.
          context: key/value inputs ``[B, S, D]``; None for self-attention.
          q_positions: ``[B, L]`` or ``[L]`` integer positions of the queries.
          k_positions: positions of the keys; default ``q_positions`` in self-attention,
            ``arange(S)`` in cross-attention.
          mask: boolean, broadcastable to ``[B, H, L, S]``; True where attending is allowed.
          padding_mask: boolean ``[B, S]``; False marks padded keys.

        Returns:
          ``[B, L, out_features]``.
        """
        self.check_structure(self_attention=context is None)
        inputs = project_inputs(
            self,
            x,
            context,
            q_positions=q_positions,
            k_positions=k_positions,
            mask=mask,
            padding_mask=padding_mask,
        )
        q, k, v = inputs.q, inputs.k, inputs.v
        q_positions, k_positions = inputs.q_positions, inputs.k_positions
        head_dim = q.shape[-1]
        window = as_window(self.window)
        encoding = self._bound_encoding()
        bias_fn = contextual = None
        if encoding is not None:
            q, k = encoding.rotate(q, k, q_positions, k_positions, context=inputs.context)
        if self.decode:
            if not (inputs.self_attention and self.causal) or padding_mask is not None:
                raise ValueError(
                    "decode=True keeps a cache for causal self-attention only, without a "
                    "padding_mask (express padding through positions)."
                )
            k, v, k_positions = self._cached(k, v, k_positions, window)
        if encoding is not None:
            bias_fn = encoding.bias_fn(
                num_heads=self.num_heads, causal=self.causal, context=inputs.context
            )
            contextual = encoding.contextual(
                num_heads=self.num_heads,
                head_dim=head_dim,
                causal=self.causal,
                context=inputs.context,
            )
        terms = self.map_terms(inputs)
        out = dot_product_attention(
            q,
            k,
            v,
            bias_fn=bias_fn,
            mask=terms.get("mask", inputs.mask),
            causal=self.causal,
            q_positions=q_positions,
            k_positions=k_positions,
            block_size=self.block_size,
            contextual=contextual,
            temperature=self.temperature,
            implementation=self.implementation,
            padding_mask=inputs.padding_mask,
            window=window,
            logit_processor=terms.get("logit_processor"),
            weight_processor=terms.get("weight_processor"),
        )
        return project_output(self, self.finish(out, x.shape[-1]), x.shape[-1])

    def check_structure(self, *, self_attention: bool) -> None:
        """Trace-time errors for a layer its fields cannot make; a subclass adds its own."""

    def map_terms(self, inputs: AttentionInputs) -> dict:
        """What this layer adds to the attention call besides the encoding's terms: a
        ``mask`` (replacing the caller's), a ``logit_processor`` and a
        ``weight_processor`` of the full maps. Plain multi-head attention adds nothing."""
        del inputs
        return {}

    def finish(self, out: Array, features: int) -> Array:
        """The attention output ``[B, L, H, K]`` before the output projection."""
        del features
        return out

    def _cached(
        self, k: Array, v: Array, k_positions: Array, window: Window | None
    ) -> tuple[Array, Array, Array]:
        """The keys, values and positions this call attends, with the cache updated.

        A full cache writes this call's keys at the cache index and returns the cache. A
        windowed layer's cache is a ring buffer of ``window.size`` slots: the call attends
        the ring as it was plus its own keys, then writes its last ``window.size`` keys at
        slots ``index mod size`` (positions are data, so where a key sits does not matter).

        Raises:
          ValueError: the call's keys do not fit the full cache's free slots: at trace
            time when the cache index is known, else when the computation runs (a write
            past the end would overwrite the last slot, as ``dynamic_update_slice`` clamps
            its start).
        """
        initialized = self.has_variable("cache", "cached_key")
        capacity = k.shape[1] if window is None else window.size
        shape = (k.shape[0], capacity) + k.shape[2:]
        key = self.variable("cache", "cached_key", jnp.zeros, shape, k.dtype)
        value = self.variable("cache", "cached_value", jnp.zeros, shape, v.dtype)
        positions = self.variable(
            "cache",
            "cached_positions",
            jnp.full,
            shape[:2],
            EMPTY_CACHE_POSITION,
            jnp.int32,
        )
        index = self.variable("cache", "cache_index", jnp.zeros, (), jnp.int32)
        if not initialized:
            return k, v, k_positions
        length = k.shape[1]
        start = index.value
        index.value = start + length
        # A full cache's own size (this call's length sized it at initialization only); a
        # ring buffer has no end.
        room = None if window is not None else key.value.shape[1]
        check_values(
            functools.partial(_cache_write_is_bad, length, room),
            functools.partial(_explain_cache_write, length, room),
            start,
            jnp.max(k_positions),
        )
        if window is not None:
            attended = (
                jnp.concatenate([key.value, k], axis=1),
                jnp.concatenate([value.value, v], axis=1),
                jnp.concatenate([positions.value, k_positions], axis=1),
            )
            kept = min(length, capacity)
            slots = (start + length - kept + jnp.arange(kept)) % capacity
            key.value = key.value.at[:, slots].set(k[:, length - kept :])
            value.value = value.value.at[:, slots].set(v[:, length - kept :])
            positions.value = positions.value.at[:, slots].set(k_positions[:, length - kept :])
            return attended
        key.value = jax.lax.dynamic_update_slice_in_dim(key.value, k, start, axis=1)
        value.value = jax.lax.dynamic_update_slice_in_dim(value.value, v, start, axis=1)
        positions.value = jax.lax.dynamic_update_slice_in_dim(
            positions.value, k_positions, start, axis=1
        )
        return key.value, value.value, positions.value

    def _bound_encoding(self) -> PositionalEncoding | None:
        return bind_layer_encoding(
            self, self.encoding, causal=self.causal, shared=self.shared_encoding
        )


def _cache_write_is_bad(length: int, room: int | None, start, last_position):
    """Whether ``length`` keys written at slot ``start`` overrun a cache of ``room`` slots
    (None: a ring buffer, which has no end), or a position reaches the empty-slot marker."""
    past_the_end = False if room is None else start + length > room
    return (last_position >= EMPTY_CACHE_POSITION) | past_the_end


def _explain_cache_write(length: int, room: int | None, start, last_position) -> str:
    if last_position >= EMPTY_CACHE_POSITION:
        return (
            f"decoding with a key/value cache takes positions below {EMPTY_CACHE_POSITION} "
            f"(2**30 marks an empty slot), got {int(last_position)}; offset the positions "
            "(relative encodings see only their differences)."
        )
    return (
        f"the key/value cache holds {room} positions and {int(start)} are written; "
        f"{length} more do not fit. Initialize the cache with at least "
        f"{int(start) + length} positions (the first call, or init_cache's max_length)."
    )
