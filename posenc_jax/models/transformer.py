"""A pre-norm Transformer in three shapes: decoder-only LM, encoder, encoder-decoder.

These are the three places the original Transformer uses attention: encoder
self-attention (bidirectional), decoder self-attention (causal), and decoder
cross-attention to the encoder's output. Every layer gets its own copy of the positional
encoding (so per-layer parameters such as FIRE's MLP live in that layer); the ``embed`` hook
is applied once per stack, at its input.

What the model is (its stacks, each layer's attention and its options) and its forward
pass are functions here, shared by the linen skin below and by
``posenc_jax.nnx.Transformer``; a skin only builds the parts under the same names.
"""

import dataclasses
from types import SimpleNamespace
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from posenc_jax._checks import as_batched_positions
from posenc_jax.attention.cache import Streaming
from posenc_jax.attention.multi_head import MultiHeadAttention, check_heads
from posenc_jax.attention.multi_token import MTAConfig, MultiTokenAttention
from posenc_jax.attention.router import check_request
from posenc_jax.attention.stick_breaking import StickBreaking
from posenc_jax.attention.temperature import AttentionTemperature
from posenc_jax.encodings.absolute import NoPE
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.context import for_tokens
from posenc_jax.models.layers import ATTENTION_KINDS, LayerSpec
from posenc_jax.typing import Array

ARCHITECTURES = ("decoder", "encoder", "encoder_decoder")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyperparameters of :class:`Transformer`.

    Attributes:
      vocab_size: V.
      architecture: "decoder" (causal LM), "encoder" (bidirectional, per-token outputs) or
        "encoder_decoder" (encoder over ``source``, causal decoder with cross-attention).
      d_model: D.
      num_layers: layers of the encoder, or of the decoder in "decoder".
      num_decoder_layers: decoder layers in "encoder_decoder" (default ``num_layers``).
      num_heads: H.
      num_kv_heads: G (default H).
      mlp_dim: hidden width of the feed-forward block (default ``4 * d_model``).
      encoding: the positional encoding, e.g. ``posenc_jax.encodings.get("rope")``.
      dtype: computation dtype name ("float32" or "bfloat16"); parameters stay float32.
      attention_temperature: length-dependent logit scaling of the self-attention layers
        (``posenc_jax.attention.temperature.AttentionTemperature``); None for none.
      attention_implementation: "auto", "dense", "chunked", "prefix", "jax" or "cudnn" (see
        ``posenc_jax.attention.router``).
      attention_block_size: tile edge of chunked attention (None: the default tile).
      attention: the self-attention module, "multi_head" (:class:`MultiHeadAttention`),
        "multi_token" (:class:`MultiTokenAttention`, configured by ``mta``; its
        convolution needs causal self-attention, so in an encoder set
        ``mta.conv_layers=()``) or "stick_breaking" (multi-head attention whose weights
        are stick-breaking's, configured by ``stick_breaking``; causal only).
        Cross-attention is always multi-head.
      mta: the :class:`MTAConfig` used when ``attention="multi_token"``.
      stick_breaking: the :class:`~posenc_jax.attention.StickBreaking` rule of the
        "stick_breaking" layers.
      attention_sink: a learned sink logit per head in every self-attention softmax
        (:class:`MultiHeadAttention`'s ``attention_sink``); a layer spec may override it.
      decode: causal self-attention layers keep a key/value cache (see
        ``posenc_jax.train.decode``); the model is then called one chunk of tokens at a
        time with the positions of those tokens.
      share_encoding_across_layers: every layer of a stack reads one set of encoding
        parameters (bound once per stack as ``position_encoding``), as T5 shares its
        relative-bias table; False (default) gives each layer its own.
      streaming: with ``decode``, a StreamingLLM cache in every causal self-attention
        layer (:class:`~posenc_jax.attention.cache.Streaming`: the first ``sinks`` tokens
        and the ``recent`` latest, positions counted inside the cache), to decode beyond
        the trained length; None (default): the full cache. Ignored without ``decode``.
      layers: one :class:`~posenc_jax.models.layers.LayerSpec` per layer (its attention's
        encoding, window, kind, temperature), e.g. from a schedule of
        :mod:`posenc_jax.models.schedules`; None (default): every layer as the fields
        above say. In "encoder_decoder" the specs apply to both stacks (which then have
        the same number of layers). ``encoding`` still chooses the positions and runs the
        ``embed`` hook once per stack.
    """

    vocab_size: int
    architecture: str = "decoder"
    d_model: int = 64
    num_layers: int = 2
    num_decoder_layers: int | None = None
    num_heads: int = 4
    num_kv_heads: int | None = None
    mlp_dim: int | None = None
    encoding: PositionalEncoding = dataclasses.field(default_factory=NoPE)
    dtype: str = "float32"
    attention_temperature: AttentionTemperature | None = None
    attention_implementation: str = "auto"
    attention_block_size: int | None = None
    attention: str = "multi_head"
    mta: MTAConfig = dataclasses.field(default_factory=MTAConfig)
    stick_breaking: StickBreaking = dataclasses.field(default_factory=StickBreaking)
    attention_sink: bool = False
    decode: bool = False
    share_encoding_across_layers: bool = False
    streaming: Streaming | None = None
    layers: tuple[LayerSpec, ...] | None = None

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture={self.architecture!r}; valid: {', '.join(ARCHITECTURES)}."
            )
        for name in ("vocab_size", "d_model", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}."
            )
        check_heads(self.num_heads, self.num_kv_heads or self.num_heads)
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype={self.dtype!r}; valid: 'float32', 'bfloat16'.")
        check_request(self.attention_implementation, self.attention_block_size)
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention={self.attention!r}; valid: {', '.join(ATTENTION_KINDS)}.")
        if self.layers is not None:
            self._check_layers()
        kinds = {self.layer_spec(i).attention or self.attention for i in range(self.num_layers)}
        if self.decode and "multi_token" in kinds:
            raise ValueError(
                "decode=True needs attention='multi_head' or 'stick_breaking': a key/value "
                "cache for 'multi_token' attention would also need past score rows."
            )
        if "stick_breaking" in kinds and self.architecture == "encoder":
            raise ValueError(
                "stick_breaking attention is causal; an encoder's self-attention is "
                "bidirectional. Use it in a decoder (or the decoder of encoder_decoder)."
            )
        if self.streaming is not None:
            if not isinstance(self.streaming, Streaming):
                raise ValueError(
                    f"streaming must be a posenc_jax.attention.cache.Streaming, got "
                    f"{self.streaming!r}."
                )
            self.streaming.check()
            if any(self.layer_spec(i).window is not None for i in range(self.num_layers)):
                raise ValueError(
                    "streaming keeps its own window of recent tokens; it takes layers "
                    "without a window."
                )
        if not isinstance(self.encoding, PositionalEncoding):
            raise ValueError(
                f"encoding must be a PositionalEncoding (posenc_jax.encodings.get(name)), "
                f"got {self.encoding!r}."
            )

    def _check_layers(self) -> None:
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        bad = [spec for spec in layers if not isinstance(spec, LayerSpec)]
        if bad:
            raise ValueError(f"layers must hold LayerSpec objects, got {bad[0]!r}.")
        stacks = {self.num_layers}
        if self.architecture == "encoder_decoder":
            stacks.add(self.num_decoder_layers or self.num_layers)
        if stacks != {len(layers)}:
            raise ValueError(
                f"layers has {len(layers)} specs but the stack(s) have {sorted(stacks)} layers; "
                "give one LayerSpec per layer (in encoder_decoder both stacks take the specs)."
            )
        if self.share_encoding_across_layers and any(s.encoding is not None for s in layers):
            raise ValueError(
                "share_encoding_across_layers shares the model's encoding; layer specs with "
                "their own encodings cannot share it."
            )

    def layer_spec(self, index: int) -> LayerSpec:
        """The spec of layer ``index`` (0-based): ``layers[index]``, or the default."""
        return LayerSpec() if self.layers is None else self.layers[index]


# --- What both skins build: the stacks, each layer's attention, the forward pass. -----------


class StackSpec(NamedTuple):
    """One stack of a :class:`Transformer`: its name, depth, direction and cross-attention."""

    name: str
    num_layers: int
    causal: bool
    cross: bool


def stacks(cfg: TransformerConfig) -> tuple[StackSpec, ...]:
    """The stacks of the model ``cfg`` describes, input side first."""
    if cfg.architecture == "encoder":
        return (StackSpec("encoder", cfg.num_layers, causal=False, cross=False),)
    if cfg.architecture == "decoder":
        return (StackSpec("decoder", cfg.num_layers, causal=True, cross=False),)
    num_decoder_layers = cfg.num_decoder_layers or cfg.num_layers
    return (
        StackSpec("encoder", cfg.num_layers, causal=False, cross=False),
        StackSpec("decoder", num_decoder_layers, causal=True, cross=True),
    )


def stack_encoding_name(cfg: TransformerConfig) -> str:
    """Where a stack holds its encoding: "position_encoding" when its layers share it,
    "position_embedding" when it serves only the ``embed`` hook."""
    return "position_encoding" if cfg.share_encoding_across_layers else "position_embedding"


def mlp_width(cfg: TransformerConfig) -> int:
    """The feed-forward block's hidden width (default ``4 * d_model``)."""
    return cfg.mlp_dim or 4 * cfg.d_model


def self_attention_options(
    cfg: TransformerConfig, layer_index: int, causal: bool, shared_encoding: Any = None
) -> tuple[str, dict[str, Any]]:
    """The kind ("multi_head", "multi_token" or "stick_breaking") of a layer's
    self-attention and the keywords both skins build it with (a "stick_breaking" layer is
    multi-head attention with ``stick_breaking`` set).

    Args:
      cfg: the model's configuration.
      layer_index: 0-based index of the layer in its stack.
      causal: the stack's direction.
      shared_encoding: the stack's encoding when the layers share it (the skin's bound
        module), else None: the layer's spec or the model's encoding.
    """
    spec = cfg.layer_spec(layer_index)
    kind = spec.attention or cfg.attention
    encoding = shared_encoding
    if encoding is None:
        encoding = cfg.encoding if spec.encoding is None else spec.encoding
    sink = cfg.attention_sink if spec.attention_sink is None else spec.attention_sink
    options = {
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "causal": causal,
        "encoding": encoding,
        "temperature": spec.temperature or cfg.attention_temperature,
        "block_size": cfg.attention_block_size,
        "implementation": cfg.attention_implementation,
        "layer_index": layer_index,
        "window": spec.window,
        "attention_sink": sink,
    }
    if kind == "multi_token":
        options["config"] = spec.mta or cfg.mta
    else:
        options["decode"] = cfg.decode and causal
        options["streaming"] = cfg.streaming if cfg.decode and causal else None
    if kind == "stick_breaking":
        options["stick_breaking"] = cfg.stick_breaking
    return kind, options


def cross_attention_options(cfg: TransformerConfig, layer_index: int) -> dict[str, Any]:
    """The keywords of a decoder layer's cross-attention: multi-head, no position (source
    and target positions are not comparable), no cache."""
    return {
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "causal": False,
        "encoding": None,
        "block_size": cfg.attention_block_size,
        "implementation": cfg.attention_implementation,
        "layer_index": layer_index,
    }


def block_forward(block: Any, x, positions, padding_mask, memory=None, memory_padding_mask=None):
    """Pre-norm layer: self-attention, cross-attention when there is a ``memory``,
    feed-forward.

    ``block`` has the parts ``attention_norm``, ``self_attention``,
    ``cross_attention_norm``, ``cross_attention``, ``mlp_norm``, ``mlp_in``, ``mlp_out``.
    """
    h = block.attention_norm(x)
    x = x + block.self_attention(h, q_positions=positions, padding_mask=padding_mask)
    if memory is not None:
        h = block.cross_attention_norm(x)
        x = x + block.cross_attention(
            h, memory, q_positions=positions, padding_mask=memory_padding_mask
        )
    h = block.mlp_norm(x)
    h = block.mlp_out(jax.nn.gelu(block.mlp_in(h)))
    return x + h


def stack_forward(
    encoding,
    layers,
    final_norm,
    x,
    positions,
    padding_mask,
    memory,
    memory_padding_mask,
    embed_positions=None,
):
    """The ``embed`` hook once at the stack's input (at ``embed_positions`` when given, else
    at ``positions``), then the layers, then a final norm."""
    if embed_positions is None:
        embed_positions = positions
    x = encoding.embed(x, embed_positions, context=for_tokens(embed_positions, padding_mask))
    for layer in layers:
        x = layer(x, positions, padding_mask, memory, memory_padding_mask)
    return final_norm(x)


class TransformerModel:
    """The forward pass of :class:`Transformer`, shared by the linen and NNX skins.

    A skin has a ``config`` and provides ``parts()``: an object with ``token_embedding``,
    a stack under each name of :func:`stacks` and ``logits``.
    """

    def __call__(
        self,
        tokens: Array,
        positions: Array | None = None,
        *,
        padding_mask: Array | None = None,
        embed_positions: Array | None = None,
        source: Array | None = None,
        source_positions: Array | None = None,
        source_padding_mask: Array | None = None,
    ) -> Array:
        """Logits ``[B, L, V]`` of ``tokens [B, L]`` (the decoder's, in "encoder_decoder").

        Args:
          tokens: integer ``[B, L]``.
          positions: ``[B, L]`` or ``[L]`` integer positions; default ``arange(L)``.
          padding_mask: boolean ``[B, L]``, True on real tokens; None when all are real.
          embed_positions: ``[B, L]`` or ``[L]`` integer positions that the ``embed`` hook
            of the ``tokens`` stack reads instead of ``positions`` (the encoding's
            ``embed_positions``: positions the task assigns, as Abacus and position
            coupling use); attention still orders the tokens by ``positions``.
          source: the encoder's integer tokens ``[B, S]`` ("encoder_decoder" only).
          source_positions: their positions; default ``arange(S)``.
          source_padding_mask: boolean ``[B, S]``, True on real source tokens.

        Returns:
          float32 ``[B, L, V]``.
        """
        cfg = self.config
        model = self.parts()
        dtype = jnp.dtype(cfg.dtype)
        _check_tokens(tokens, "tokens")
        positions = as_batched_positions(positions, *tokens.shape, "positions")
        if embed_positions is not None:
            embed_positions = as_batched_positions(
                embed_positions, *tokens.shape, "embed_positions"
            )
        padding_mask = _checked_padding(padding_mask, tokens, "padding_mask")

        memory = None
        if cfg.architecture == "encoder_decoder":
            if source is None:
                raise ValueError("an encoder_decoder Transformer needs source tokens [B, S].")
            _check_tokens(source, "source")
            source_positions = as_batched_positions(
                source_positions, *source.shape, "source_positions"
            )
            source_padding_mask = _checked_padding(
                source_padding_mask, source, "source_padding_mask"
            )
            memory = model.encoder(
                model.token_embedding(source).astype(dtype), source_positions, source_padding_mask
            )
        elif source is not None:
            raise ValueError(
                f"source tokens are only used by encoder_decoder, not {cfg.architecture}."
            )

        stack = model.encoder if cfg.architecture == "encoder" else model.decoder
        x = stack(
            model.token_embedding(tokens).astype(dtype),
            positions,
            padding_mask,
            memory,
            source_padding_mask,
            embed_positions,
        )
        return model.logits(x.astype(jnp.float32))


# --- The linen skin. -------------------------------------------------------------------------


class _Block(nn.Module):
    """Pre-norm layer: self-attention, optional cross-attention, feed-forward."""

    config: TransformerConfig
    causal: bool
    cross: bool = False
    layer_index: int = 0
    encoding: PositionalEncoding | None = None

    @nn.compact
    def __call__(self, x, positions, padding_mask, memory=None, memory_padding_mask=None):
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        kind, options = self_attention_options(cfg, self.layer_index, self.causal, self.encoding)
        attention = MultiTokenAttention if kind == "multi_token" else MultiHeadAttention
        common = {"dtype": dtype, "shared_encoding": cfg.share_encoding_across_layers}
        parts = {
            "attention_norm": nn.LayerNorm(dtype=dtype, name="attention_norm"),
            "self_attention": attention(**options, **common, name="self_attention"),
            "mlp_norm": nn.LayerNorm(dtype=dtype, name="mlp_norm"),
            "mlp_in": nn.Dense(mlp_width(cfg), dtype=dtype, name="mlp_in"),
            "mlp_out": nn.Dense(cfg.d_model, dtype=dtype, name="mlp_out"),
        }
        if self.cross:
            parts["cross_attention_norm"] = nn.LayerNorm(dtype=dtype, name="cross_attention_norm")
            parts["cross_attention"] = MultiHeadAttention(
                **cross_attention_options(cfg, self.layer_index), **common, name="cross_attention"
            )
        return block_forward(
            SimpleNamespace(**parts), x, positions, padding_mask, memory, memory_padding_mask
        )


class _Stack(nn.Module):
    """Embedding hook, then ``num_layers`` blocks, then a final norm."""

    config: TransformerConfig
    num_layers: int
    causal: bool
    cross: bool = False

    @nn.compact
    def __call__(
        self,
        x,
        positions,
        padding_mask,
        memory=None,
        memory_padding_mask=None,
        embed_positions=None,
    ):
        # A zero "perturbation" lets tests and analyses take gradients with respect to the
        # stack's input embeddings (Flax returns x unchanged when none is supplied).
        x = self.perturb("input_embeddings", x)
        cfg = self.config
        shared = cfg.share_encoding_across_layers
        stack_encoding = cfg.encoding.clone(parent=self, name=stack_encoding_name(cfg))
        layers = [
            _Block(
                cfg,
                self.causal,
                self.cross,
                layer_index=i,
                encoding=stack_encoding if shared else None,
                name=f"layer_{i}",
            )
            for i in range(self.num_layers)
        ]
        final_norm = nn.LayerNorm(dtype=jnp.dtype(cfg.dtype), name="final_norm")
        return stack_forward(
            stack_encoding,
            layers,
            final_norm,
            x,
            positions,
            padding_mask,
            memory,
            memory_padding_mask,
            embed_positions,
        )


class Transformer(TransformerModel, nn.Module):
    """Token-level Transformer whose positional encoding is a constructor argument.

    Call ``Transformer(config).apply(params, tokens, positions)``:

    * "decoder": ``tokens [B, L]`` -> next-token logits ``[B, L, V]`` (causal).
    * "encoder": ``tokens [B, L]`` -> per-token logits ``[B, L, V]`` (bidirectional).
    * "encoder_decoder": ``tokens [B, L]`` are the decoder inputs and ``source [B, S]`` the
      encoder inputs -> decoder logits ``[B, L, V]``.

    Positions default to ``arange``; pass them explicitly for randomized positions,
    packing, left padding or offsets (positions are data). ``padding_mask [B, L]`` (and
    ``source_padding_mask [B, S]``) marks real tokens True and padding False: no query
    attends a padded key, and the encoding's hooks see each example's own length (a padded
    example's real tokens get the logits they get unpadded).

    The forward pass is :class:`TransformerModel`'s, shared with
    ``posenc_jax.nnx.Transformer``, which holds the same parameters under the same names.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Xiong et al., "On Layer
      Normalization in the Transformer Architecture" (pre-norm), ICML 2020.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(self, tokens: Array, positions: Array | None = None, **options) -> Array:
        """:meth:`TransformerModel.__call__`, in the compact scope where the parameters are
        made."""
        return super().__call__(tokens, positions, **options)

    @nn.nowrap
    def parts(self) -> SimpleNamespace:
        cfg = self.config
        parts = {
            "token_embedding": nn.Embed(cfg.vocab_size, cfg.d_model, name="token_embedding"),
            "logits": nn.Dense(cfg.vocab_size, dtype=jnp.float32, name="logits"),
        }
        for spec in stacks(cfg):
            parts[spec.name] = _Stack(
                cfg, spec.num_layers, causal=spec.causal, cross=spec.cross, name=spec.name
            )
        return SimpleNamespace(**parts)


def _checked_padding(padding_mask: Array | None, tokens: Array, name: str) -> Array | None:
    """A padding mask as boolean ``[B, L]`` matching its tokens (True on real tokens)."""
    if padding_mask is None:
        return None
    if jnp.shape(padding_mask) != tokens.shape:
        raise ValueError(
            f"{name} has shape {jnp.shape(padding_mask)}; expected the tokens' [B, L] = "
            f"{list(tokens.shape)} (True on real tokens, False on padding)."
        )
    return jnp.asarray(padding_mask).astype(jnp.bool_)


def _check_tokens(tokens: Any, name: str) -> None:
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} must be integer [B, L]; got {tokens.dtype}{list(tokens.shape)}.")
