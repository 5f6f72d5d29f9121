"""The Transformer as a Flax NNX module, from the linen model's definitions.

:class:`Transformer` takes the same :class:`~posenc_jax.models.TransformerConfig` as
:class:`posenc_jax.models.Transformer` and runs the same forward pass
(:class:`~posenc_jax.models.transformer.TransformerModel`); it builds the same parts
under the same names (``token_embedding``, ``encoder`` / ``decoder`` with ``layer_{i}``,
``final_norm`` and the stack's ``position_embedding``, ``logits``), so a linen parameter
tree loads into it as it is (:func:`posenc_jax.nnx.load_linen_params`).
"""

import jax.numpy as jnp
from flax import nnx

from posenc_jax.attention.multi_head import resolve_head_dim
from posenc_jax.models import transformer
from posenc_jax.models.transformer import TransformerConfig
from posenc_jax.nnx.attention import MultiHeadAttention, MultiTokenAttention
from posenc_jax.nnx.encodings import Encoding


class _Block(nnx.Module):
    """Pre-norm layer: self-attention, optional cross-attention, feed-forward."""

    def __init__(
        self,
        cfg: TransformerConfig,
        layer_index: int,
        causal: bool,
        cross: bool,
        shared_encoding: Encoding | None,
        *,
        rngs: nnx.Rngs,
    ):
        dtype = jnp.dtype(cfg.dtype)
        width = cfg.d_model
        kind, options = transformer.self_attention_options(
            cfg, layer_index, causal, shared_encoding
        )
        attention = MultiTokenAttention if kind == "multi_token" else MultiHeadAttention
        self.attention_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.self_attention = attention(in_features=width, dtype=dtype, rngs=rngs, **options)
        if cross:
            self.cross_attention_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
            self.cross_attention = MultiHeadAttention(
                in_features=width,
                dtype=dtype,
                rngs=rngs,
                **transformer.cross_attention_options(cfg, layer_index),
            )
        else:
            self.cross_attention_norm = self.cross_attention = None
        hidden = transformer.mlp_width(cfg)
        self.mlp_norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.mlp_in = nnx.Linear(width, hidden, dtype=dtype, rngs=rngs)
        self.mlp_out = nnx.Linear(hidden, width, dtype=dtype, rngs=rngs)

    def __call__(self, x, positions, padding_mask, memory=None, memory_padding_mask=None):
        return transformer.block_forward(
            self, x, positions, padding_mask, memory, memory_padding_mask
        )


class _Stack(nnx.Module):
    """Embedding hook, then the stack's blocks (``layer_{i}``), then a final norm."""

    def __init__(self, cfg: TransformerConfig, spec: transformer.StackSpec, *, rngs: nnx.Rngs):
        shared = cfg.share_encoding_across_layers
        self.num_layers = spec.num_layers
        self.encoding_name = transformer.stack_encoding_name(cfg)
        encoding = Encoding(
            cfg.encoding,
            d_model=cfg.d_model,
            num_heads=cfg.num_heads,
            head_dim=resolve_head_dim(None, cfg.d_model, cfg.num_heads),
            places=("embed", "attention") if shared else ("embed",),
            rngs=rngs,
        )
        setattr(self, self.encoding_name, encoding)
        for i in range(spec.num_layers):
            block = _Block(cfg, i, spec.causal, spec.cross, encoding if shared else None, rngs=rngs)
            setattr(self, f"layer_{i}", block)
        self.final_norm = nnx.LayerNorm(cfg.d_model, dtype=jnp.dtype(cfg.dtype), rngs=rngs)

    def __call__(
        self,
        x,
        positions,
        padding_mask,
        memory=None,
        memory_padding_mask=None,
        embed_positions=None,
    ):
        layers = [getattr(self, f"layer_{i}") for i in range(self.num_layers)]
        return transformer.stack_forward(
            getattr(self, self.encoding_name),
            layers,
            self.final_norm,
            x,
            positions,
            padding_mask,
            memory,
            memory_padding_mask,
            embed_positions,
        )


class Transformer(transformer.TransformerModel, nnx.Module):
    """Token-level Transformer whose positional encoding is part of its configuration.

    The NNX form of :class:`posenc_jax.models.Transformer` (see it for the three
    architectures and the arguments of a call): ``Transformer(config, rngs=nnx.Rngs(0))``,
    then ``model(tokens, positions)``.

    With ``config.decode``, call :meth:`init_cache` first, then feed one chunk of tokens
    per call with their positions (and, in "encoder_decoder", the ``source`` each time).

    Args:
      config: the model's :class:`~posenc_jax.models.TransformerConfig`.
      rngs: the parameters' random keys.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.token_embedding = nnx.Embed(config.vocab_size, config.d_model, rngs=rngs)
        for spec in transformer.stacks(config):
            setattr(self, spec.name, _Stack(config, spec, rngs=rngs))
        self.logits = nnx.Linear(config.d_model, config.vocab_size, dtype=jnp.float32, rngs=rngs)

    def parts(self) -> "Transformer":
        return self

    def init_cache(self, batch_size: int, length: int) -> None:
        """Empty key/value caches in every decoding layer, for ``batch_size`` sequences of
        up to ``length`` tokens."""
        if not self.config.decode:
            raise ValueError("init_cache needs a model whose config has decode=True.")
        for _, module in nnx.iter_modules(self):
            if isinstance(module, MultiHeadAttention) and module.decode:
                module.init_cache(batch_size, length)
