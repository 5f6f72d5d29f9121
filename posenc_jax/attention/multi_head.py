"""Multi-head attention: its forward computation, shared by two skins, and the linen skin.

:class:`AttentionLayer` holds everything an attention layer computes: the checks, the
positions and padding, the hook context, the encoding's hooks, the key/value cache
(:mod:`posenc_jax.attention.cache`) and the call to ``dot_product_attention``. A skin only
holds parameters: this module's linen :class:`MultiHeadAttention` creates its projections
lazily from the input's width; ``posenc_jax.nnx.MultiHeadAttention`` builds the same
projections (same names, same shapes) at construction.
"""

from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from posenc_jax._checks import as_batched_positions
from posenc_jax.attention import cache
from posenc_jax.attention.core import dot_product_attention
from posenc_jax.attention.ops import Window, as_window
from posenc_jax.attention.stick_breaking import StickBreaking
from posenc_jax.attention.temperature import AttentionTemperature
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.context import HookContext
from posenc_jax.encodings.parameters import Dims, Parameter, Specs, linen_parameters
from posenc_jax.functional.decay import cumulative_log_decay
from posenc_jax.typing import Array

#: Kept here for callers that import it from this module (see ``attention.cache``).
EMPTY_CACHE_POSITION = cache.EMPTY_CACHE_POSITION


def check_heads(num_heads: int, num_kv_heads: int) -> None:
    """Head counts must be positive and H a multiple of G."""
    if num_heads <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ValueError(
            f"num_heads={num_heads} must be a positive multiple of num_kv_heads={num_kv_heads} "
            "(num_kv_heads=num_heads is multi-head, 1 is multi-query, in between is grouped)."
        )


def resolve_head_dim(head_dim: int | None, features: int, num_heads: int) -> int:
    """K: ``head_dim`` if given, else ``D // H``; an error when it is not positive."""
    head_dim = head_dim or features // num_heads
    if head_dim <= 0:
        raise ValueError(f"head_dim must be positive; got {head_dim} for D={features}.")
    return head_dim


def check_direction(encoding: Any, causal: bool) -> None:
    """A causal-only encoding (xPos, CoPE) in non-causal attention is an error."""
    if encoding is not None and encoding.causal_only and not causal:
        raise ValueError(
            f"encoding {type(encoding).__name__} is defined for causal attention only; "
            "build the attention with causal=True or choose another encoding."
        )


def bind_layer_encoding(
    layer: nn.Module, encoding: PositionalEncoding | None, *, causal: bool, shared: bool
) -> PositionalEncoding | None:
    """The encoding a linen attention layer calls.

    The same encoding instance is usually handed to every layer, and Flax would share one
    bound instance between them; so by default each layer binds a fresh clone and its
    parameters live under the layer. With ``shared``, the instance is used as given: it is
    bound elsewhere (once per stack) and every layer reads its parameters.

    Raises:
      ValueError: a causal-only encoding (xPos, CoPE) in non-causal attention.
    """
    if encoding is None:
        return None
    check_direction(encoding, causal)
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


class AttentionLayer:
    """The forward computation of multi-head attention, shared by the linen and NNX skins.

    A skin has the attributes of :class:`MultiHeadAttention` (``num_heads``,
    ``num_kv_heads``, ``head_dim``, ``out_features``, ``causal``, ``temperature``,
    ``block_size``, ``implementation``, ``decode``, ``layer_index``, ``window``,
    ``attention_sink``, ``stick_breaking``, ``streaming``, ``param_dtype``) and
    provides where parameters and state live:

    * ``project(name, x, features, axis)``: the projection ``name`` ("query", "key",
      "value" to ``features = (heads, K)`` from the last axis; "out" to ``features = width``
      from the last two axes);
    * ``layer_encoding()``: the encoding whose hooks the layer calls (linen module or NNX
      encoding; the same hook methods), or None;
    * ``parameters_of(specs)``: the values of the parameters :meth:`layer_parameters`
      declares (linen creates them in the call, NNX at construction);
    * ``cache_state(new)``: the layer's :class:`~posenc_jax.attention.cache.KVCache` (None
      when the call only sizes a fresh one, as linen's ``init`` does), ``new`` giving the
      shapes of an empty one; ``store_cache(state)`` writes it back.

    A subclass adds parameters through :meth:`layer_parameters` and terms through
    :meth:`check_structure`, :meth:`map_terms` and :meth:`finish` (Multi-Token Attention).
    """

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
        inputs = self._inputs(x, context, q_positions, k_positions, mask, padding_mask)
        dims = Dims(
            d_model=x.shape[-1],
            num_heads=self.num_heads,
            head_dim=inputs.q.shape[-1],
            given_by=type(self).__name__,
        )
        params = self.parameters_of(self.layer_parameters(dims))
        q, k, v = inputs.q, inputs.k, inputs.v
        q_positions, k_positions = inputs.q_positions, inputs.k_positions
        hook_context = inputs.context
        window = as_window(self.window)
        encoding = self.layer_encoding()
        streaming = self.streaming
        bias_fn = contextual = log_decay = None
        if self.decode:
            if not (inputs.self_attention and self.causal) or padding_mask is not None:
                raise ValueError(
                    "decode=True keeps a cache for causal self-attention only, without a "
                    "padding_mask (express padding through positions)."
                )
        if encoding is not None:
            log_decay = encoding.decay(
                num_heads=self.num_heads, causal=self.causal, context=inputs.context
            )
            log_decay = _checked_decay(log_decay, inputs)
        if streaming is not None:
            # Keys are cached before rotate and placed by positions counted in the cache.
            (k, v, k_positions), q_positions = self._streamed(
                k, v, q_positions, k_positions, log_decay
            )
            hook_context = hook_context._replace(q_positions=q_positions, k_positions=k_positions)
        if encoding is not None:
            q, k = encoding.rotate(q, k, q_positions, k_positions, context=hook_context)
        q_decay = k_decay = None
        if self.decode and streaming is None:
            k, v, k_positions, q_decay, k_decay = self._cached(k, v, k_positions, window, log_decay)
        elif log_decay is not None:
            q_decay = k_decay = cumulative_log_decay(log_decay, inputs.padding_mask)
        if encoding is not None:
            bias_fn = encoding.bias_fn(
                num_heads=self.num_heads, causal=self.causal, context=hook_context
            )
            contextual = encoding.contextual(
                num_heads=self.num_heads,
                head_dim=dims.head_dim,
                causal=self.causal,
                context=hook_context,
            )
        terms = self.map_terms(inputs, params)
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
            separable_bias=None if q_decay is None else (q_decay, k_decay),
            sink_logits=params.get("sink_logits"),
            stick_breaking=self.stick_breaking,
        )
        out = self.finish(out, params)
        return self.project("out", out, self.out_features or x.shape[-1], (-2, -1))

    def check_structure(self, *, self_attention: bool) -> None:
        """Trace-time errors for a layer its fields cannot make; a subclass adds its own."""

    def layer_parameters(self, dims: Dims) -> Specs:
        """The parameters this layer adds to its projections and its encoding's, declared
        from its dimensions: with ``attention_sink``, a sink logit per head
        (``sink_logits [H]``, starting at 0)."""
        if not self.attention_sink:
            return {}
        zeros = nn.initializers.zeros
        return {"sink_logits": Parameter((dims.num_heads,), zeros, self.param_dtype)}

    def map_terms(self, inputs: AttentionInputs, params: dict) -> dict:
        """What this layer adds to the attention call besides the encoding's terms: a
        ``mask`` (replacing the caller's), a ``logit_processor`` and a
        ``weight_processor`` of the full maps. Plain multi-head attention adds nothing.

        Args:
          inputs: the call's inputs.
          params: the values of :meth:`layer_parameters`.
        """
        del inputs, params
        return {}

    def finish(self, out: Array, params: dict) -> Array:
        """The attention output ``[B, L, H, K]`` before the output projection."""
        del params
        return out

    def _inputs(
        self,
        x: Array,
        context: Array | None,
        q_positions: Array | None,
        k_positions: Array | None,
        mask: Array | None,
        padding_mask: Array | None,
    ) -> AttentionInputs:
        """The front every attention layer shares: checks, positions, padding, projections.

        Key positions default to the query positions in self-attention and to
        ``arange(S)`` in cross-attention. A ``padding_mask [B, S]`` marks padded keys (and,
        in self-attention, padded queries) in the hook context.
        """
        num_kv_heads = self.num_kv_heads or self.num_heads
        check_heads(self.num_heads, num_kv_heads)
        self_attention = context is None
        context = x if self_attention else context
        if x.ndim != 3 or context.ndim != 3:
            raise ValueError(
                f"inputs must be [B, L, D]; got x {x.shape} and context {context.shape}."
            )
        batch, q_len, features = x.shape
        k_len = context.shape[1]
        head_dim = resolve_head_dim(self.head_dim, features, self.num_heads)

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
            layer_index=self.layer_index,
        )
        return AttentionInputs(
            q=self.project("query", x, (self.num_heads, head_dim), -1),
            k=self.project("key", context, (num_kv_heads, head_dim), -1),
            v=self.project("value", context, (num_kv_heads, head_dim), -1),
            q_positions=q_positions,
            k_positions=k_positions,
            mask=mask,
            padding_mask=padding_mask,
            self_attention=self_attention,
            context=hook_context,
        )

    def _streamed(
        self,
        k: Array,
        v: Array,
        q_positions: Array,
        k_positions: Array,
        log_decay: Array | None,
    ) -> tuple[tuple[Array, Array, Array], Array]:
        """StreamingLLM decoding (:class:`~posenc_jax.attention.cache.Streaming`): the kept
        keys (not rotated), values and their positions counted inside the cache, and the
        queries' positions counted the same way. A decay term is refused: ``c_i - c_j``
        sums the log decays of every token between a query and a key, and neither the
        Forgetting Transformer nor StreamingLLM defines that sum over evicted tokens."""
        streaming = self.streaming
        streaming.check()
        if not self.decode or self.window is not None:
            raise ValueError(
                "streaming is a decoding cache: build the layer with decode=True and no window."
            )
        if log_decay is not None:
            raise ValueError(
                "streaming evicts the tokens between the sinks and the recent window, but the "
                "encoding's decay term (c_i - c_j) sums the log decays of every token between "
                "a query and a key, which is undefined over evicted tokens; decode this layer "
                "with streaming=None (the full cache or a window), or use an encoding without "
                "a decay hook."
            )
        batch, length, num_kv_heads, head_dim = k.shape

        def new() -> cache.KVCache:
            return cache.empty_cache(
                batch, streaming.capacity, num_kv_heads, head_dim, k.dtype, value_dim=v.shape[-1]
            )

        state = self.cache_state(new)
        if state is None:
            return (k, v, k_positions), q_positions
        attended, state = cache.append_streaming(state, k, v, k_positions, streaming)
        self.store_cache(state)
        kept = attended.positions
        in_cache = cache.positions_in_cache
        return (attended.key, attended.value, in_cache(kept, kept)), in_cache(kept, q_positions)

    def _cached(
        self,
        k: Array,
        v: Array,
        k_positions: Array,
        window: Window | None,
        log_decay: Array | None,
    ) -> tuple[Array, Array, Array, Array | None, Array | None]:
        """The keys, values and positions this call attends, with the cache updated
        (:func:`posenc_jax.attention.cache.append`); with a decay term also the queries'
        and the attended keys' cumulative log decays ``[B, H, L]`` / ``[B, H, S]``, the
        sum continued from the last cached token's."""
        batch, length, num_kv_heads, key_dim = k.shape
        decay_heads = None if log_decay is None else log_decay.shape[1]

        def new() -> cache.KVCache:
            capacity = cache.cache_capacity(length, window)
            return cache.empty_cache(
                batch,
                capacity,
                num_kv_heads,
                key_dim,
                k.dtype,
                value_dim=v.shape[-1],
                decay_heads=decay_heads,
            )

        state = self.cache_state(new)
        if state is None:
            q_decay = None if log_decay is None else cumulative_log_decay(log_decay)
            return k, v, k_positions, q_decay, q_decay
        q_decay = None
        if log_decay is not None:
            q_decay = cumulative_log_decay(log_decay, start=cache.decay_total(state))
        new_decay = None if q_decay is None else jnp.swapaxes(q_decay, 1, 2)
        attended, state = cache.append(state, k, v, k_positions, window, decay=new_decay)
        self.store_cache(state)
        k_decay = None if attended.decay is None else jnp.swapaxes(attended.decay, 1, 2)
        return attended.key, attended.value, attended.positions, q_decay, k_decay


def _checked_decay(log_decay: Array | None, inputs: AttentionInputs) -> Array | None:
    """An encoding's per-token log decays, checked: ``[B, H, L]`` for the queries of a
    self-attention call (``c_i - c_j`` compares a query with keys of its own sequence)."""
    if log_decay is None:
        return None
    if not inputs.self_attention:
        raise ValueError(
            "the encoding's decay term (c_i - c_j over one sequence) needs self-attention; "
            "build cross-attention without it (encoding=None)."
        )
    batch, length, num_heads = inputs.q.shape[:3]
    if jnp.shape(log_decay) != (batch, num_heads, length):
        raise ValueError(
            f"the decay hook returned shape {jnp.shape(log_decay)}; expected [B, H, L] = "
            f"{[batch, num_heads, length]}."
        )
    return log_decay


class MultiHeadAttention(AttentionLayer, nn.Module):
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
    :meth:`map_terms` and :meth:`finish` and shares everything else. The computation is
    :class:`AttentionLayer`'s, shared with ``posenc_jax.nnx.MultiHeadAttention``; this
    module holds the linen parameters ("query", "key", "value", "out", and the encoding's
    under "position_encoding") and the "cache" collection.

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
      implementation: "auto" (default), "dense", "chunked", "prefix", "jax" or "cudnn"; the router
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
      attention_sink: a learned logit per head (``sink_logits [H]``, starting at 0) in
        every query's softmax normalizer, with a value of zero: a query may put weight on
        nothing (gpt-oss's ``sinks``; Xiao et al.'s sink token without a token).
      stick_breaking: a :class:`~posenc_jax.attention.stick_breaking.StickBreaking`: the
        weights are stick-breaking's instead of a softmax (causal attention; the
        ``stick_breaking`` attention kind of a Transformer); None (default): softmax.
      streaming: with ``decode``, a StreamingLLM cache
        (:class:`~posenc_jax.attention.cache.Streaming`): the first ``sinks`` tokens and
        the ``recent`` latest ones are kept, their keys before ``rotate``, and every hook
        sees positions counted inside the cache; None (default): the full cache.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Shazeer, "Fast Transformer
      Decoding" (MQA), 2019; Ainslie et al., "GQA", EMNLP 2023; OpenAI, "gpt-oss-120b &
      gpt-oss-20b Model Card", 2025 (a learned bias in each head's softmax denominator);
      Xiao et al., "Efficient Streaming Language Models with Attention Sinks", ICLR 2024;
      Tan et al., "Scaling Stick-Breaking Attention", ICLR 2025.
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
    attention_sink: bool = False
    stick_breaking: StickBreaking | None = None
    streaming: cache.Streaming | None = None

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None, **options) -> Array:
        """:meth:`AttentionLayer.__call__`, in the compact scope where the parameters are made."""
        return super().__call__(x, context, **options)

    # The linen skin: parameters made lazily, in the compact call, from the input's width.

    @nn.nowrap
    def project(self, name: str, x: Array, features, axis) -> Array:
        return nn.DenseGeneral(
            features,
            axis=axis,
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=self.kernel_init,
            name=name,
        )(x)

    @nn.nowrap
    def parameters_of(self, specs) -> dict:
        return linen_parameters(self, specs)

    @nn.nowrap
    def layer_encoding(self) -> PositionalEncoding | None:
        return bind_layer_encoding(
            self, self.encoding, causal=self.causal, shared=self.shared_encoding
        )

    @nn.nowrap
    def cache_state(self, new) -> cache.KVCache | None:
        # The first call (``init``) creates the cache, sized to its input, and attends as
        # without one.
        if not self.has_variable("cache", cache.CACHE_NAMES.key):
            for name, value in cache.named_arrays(new()).items():
                self.variable("cache", name, lambda value=value: value)
            return None
        return cache.from_named(lambda name: self.get_variable("cache", name))

    @nn.nowrap
    def store_cache(self, state: cache.KVCache) -> None:
        for name, value in cache.named_arrays(state).items():
            self.put_variable("cache", name, value)
