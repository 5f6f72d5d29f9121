"""A pre-norm Transformer in three shapes: decoder-only LM, encoder, encoder-decoder.

These are the three places the original Transformer uses attention: encoder
self-attention (bidirectional), decoder self-attention (causal), and decoder
cross-attention to the encoder's output. Every layer gets its own copy of the positional
encoding (so per-layer parameters such as FIRE's MLP live in that layer); the ``embed`` hook
is applied once per stack, at its input.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from posenc_jax._checks import as_batched_positions
from posenc_jax.attention.multi_head import MultiHeadAttention, check_heads
from posenc_jax.attention.multi_token import MTAConfig, MultiTokenAttention
from posenc_jax.attention.router import check_request
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
      attention_implementation: "auto", "dense", "chunked", "jax" or "cudnn" (see
        ``posenc_jax.attention.router``).
      attention_block_size: tile edge of chunked attention (None: the default tile).
      attention: the self-attention module, "multi_head" (:class:`MultiHeadAttention`) or
        "multi_token" (:class:`MultiTokenAttention`, configured by ``mta``; its
        convolution needs causal self-attention, so in an encoder set
        ``mta.conv_layers=()``). Cross-attention is always multi-head.
      mta: the :class:`MTAConfig` used when ``attention="multi_token"``.
      decode: causal self-attention layers keep a key/value cache (see
        ``posenc_jax.train.decode``); the model is then called one chunk of tokens at a
        time with the positions of those tokens.
      share_encoding_across_layers: every layer of a stack reads one set of encoding
        parameters (bound once per stack as ``position_encoding``), as T5 shares its
        relative-bias table; False (default) gives each layer its own.
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
    decode: bool = False
    share_encoding_across_layers: bool = False
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
        if self.decode and kinds != {"multi_head"}:
            raise ValueError(
                "decode=True needs attention='multi_head': a key/value cache for "
                f"{sorted(kinds - {'multi_head'})[0]!r} attention would also need past score "
                "rows."
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

        spec = cfg.layer_spec(self.layer_index)

        def attention(name, encoding, causal, temperature=None, multi_token=False, window=None):
            module, extra = MultiHeadAttention, {"decode": cfg.decode and causal}
            if multi_token:
                module = MultiTokenAttention
                extra = {"config": spec.mta or cfg.mta}
            return module(
                num_heads=cfg.num_heads,
                num_kv_heads=cfg.num_kv_heads,
                causal=causal,
                encoding=encoding,
                dtype=dtype,
                temperature=temperature,
                block_size=cfg.attention_block_size,
                implementation=cfg.attention_implementation,
                shared_encoding=cfg.share_encoding_across_layers,
                layer_index=self.layer_index,
                window=window,
                name=name,
                **extra,
            )

        h = nn.LayerNorm(dtype=dtype, name="attention_norm")(x)
        self_attention = attention(
            "self_attention",
            self.encoding if spec.encoding is None else spec.encoding,
            self.causal,
            spec.temperature or cfg.attention_temperature,
            multi_token=(spec.attention or cfg.attention) == "multi_token",
            window=spec.window,
        )
        x = x + self_attention(h, q_positions=positions, padding_mask=padding_mask)
        if self.cross:
            h = nn.LayerNorm(dtype=dtype, name="cross_attention_norm")(x)
            x = x + attention("cross_attention", None, False)(
                h, memory, q_positions=positions, padding_mask=memory_padding_mask
            )
        h = nn.LayerNorm(dtype=dtype, name="mlp_norm")(x)
        h = nn.Dense(cfg.mlp_dim or 4 * cfg.d_model, dtype=dtype, name="mlp_in")(h)
        h = nn.Dense(cfg.d_model, dtype=dtype, name="mlp_out")(nn.gelu(h))
        return x + h


class _Stack(nn.Module):
    """Embedding hook, then ``num_layers`` blocks, then a final norm."""

    config: TransformerConfig
    num_layers: int
    causal: bool
    cross: bool = False

    @nn.compact
    def __call__(self, x, positions, padding_mask, memory=None, memory_padding_mask=None):
        # A zero "perturbation" lets tests and analyses take gradients with respect to the
        # stack's input embeddings (Flax returns x unchanged when none is supplied).
        x = self.perturb("input_embeddings", x)
        cfg = self.config
        shared = cfg.share_encoding_across_layers
        stack_encoding = cfg.encoding.clone(
            parent=self, name="position_encoding" if shared else "position_embedding"
        )
        x = stack_encoding.embed(x, positions, context=for_tokens(positions, padding_mask))
        for i in range(self.num_layers):
            x = _Block(
                cfg,
                self.causal,
                self.cross,
                layer_index=i,
                encoding=stack_encoding if shared else cfg.encoding,
                name=f"layer_{i}",
            )(x, positions, padding_mask, memory, memory_padding_mask)
        return nn.LayerNorm(dtype=jnp.dtype(self.config.dtype), name="final_norm")(x)


class Transformer(nn.Module):
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

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017; Xiong et al., "On Layer
      Normalization in the Transformer Architecture" (pre-norm), ICML 2020.
    """

    config: TransformerConfig

    @nn.compact
    def __call__(
        self,
        tokens: Array,
        positions: Array | None = None,
        *,
        padding_mask: Array | None = None,
        source: Array | None = None,
        source_positions: Array | None = None,
        source_padding_mask: Array | None = None,
    ) -> Array:
        cfg = self.config
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, name="token_embedding")
        dtype = jnp.dtype(cfg.dtype)
        _check_tokens(tokens, "tokens")
        positions = as_batched_positions(positions, *tokens.shape, "positions")
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
            memory = _Stack(cfg, cfg.num_layers, causal=False, name="encoder")(
                embed(source).astype(dtype), source_positions, source_padding_mask
            )
        elif source is not None:
            raise ValueError(
                f"source tokens are only used by encoder_decoder, not {cfg.architecture}."
            )

        num_layers = cfg.num_layers
        if cfg.architecture == "encoder_decoder":
            num_layers = cfg.num_decoder_layers or cfg.num_layers
        x = _Stack(
            cfg,
            num_layers,
            causal=cfg.architecture != "encoder",
            cross=memory is not None,
            name="encoder" if cfg.architecture == "encoder" else "decoder",
        )(embed(tokens).astype(dtype), positions, padding_mask, memory, source_padding_mask)
        return nn.Dense(cfg.vocab_size, dtype=jnp.float32, name="logits")(x.astype(jnp.float32))


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
