"""Absolute encodings: position vectors added to the token embeddings at the input."""

import flax.linen as nn
import jax.numpy as jnp

from posenc_jax import functional
from posenc_jax._checks import check_positions_below
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.context import HookContext
from posenc_jax.encodings.parameters import Dims, Parameter, Specs
from posenc_jax.encodings.registry import register
from posenc_jax.typing import Array


@register("nope")
class NoPE(PositionalEncoding):
    """No positional encoding: only a causal mask (if any) carries order.

    References:
      Haviv et al., "Transformer Language Models without Positional Encodings Still Learn
      Positional Information", Findings of EMNLP 2022; Kazemnejad et al., "The Impact of
      Positional Encoding on Length Generalization in Transformers", NeurIPS 2023.
    """


@register("sinusoidal")
class Sinusoidal(PositionalEncoding):
    """Fixed sinusoids added to the embeddings (interleaved sin/cos, base 10000).

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Section 3.5.
    """

    base: float = 10000.0

    def embed_with(self, params, x: Array, positions: Array, *, context=None) -> Array:
        table = functional.sinusoidal(positions, x.shape[-1], base=self.base)
        return x + table.astype(x.dtype)


@register("learned")
class Learned(PositionalEncoding):
    """A trainable table of ``max_length`` position vectors (BERT / GPT-2).

    A position >= ``max_length`` is an error (at trace time when the sequence is longer
    than the table, otherwise when the computation runs), never a silent clamp.

    References:
      Devlin et al., "BERT", NAACL 2019; Radford et al., "Language Models are Unsupervised
      Multitask Learners" (GPT-2), 2019.
    """

    max_length: int = 512
    stddev: float = 0.02

    def embed_parameters(self, dims: Dims) -> Specs:
        if self.max_length <= 0:
            raise ValueError(f"learned max_length must be positive, got {self.max_length}.")
        init = nn.initializers.normal(self.stddev)
        return {"table": Parameter((self.max_length, dims.d_model), init)}

    def embed_with(self, params, x: Array, positions: Array, *, context=None) -> Array:
        if positions.shape[-1] > self.max_length:
            raise ValueError(
                f"learned position table has max_length={self.max_length} rows but the "
                f"sequence has {positions.shape[-1]} tokens; build it with "
                f"max_length >= {positions.shape[-1]}."
            )
        check_positions_below(positions, self.max_length, "learned position table")
        return x + jnp.take(params["table"], positions, axis=0).astype(x.dtype)


class _ScalarFeature(PositionalEncoding):
    """Embeds a scalar position feature ``f(p)`` as ``f(p) * w`` with a learned ``w [D]``."""

    stddev: float = 0.02

    def _feature(self, positions: Array, context: HookContext | None) -> Array:
        raise NotImplementedError

    def embed_parameters(self, dims: Dims) -> Specs:
        return {"direction": Parameter((dims.d_model,), nn.initializers.normal(self.stddev))}

    def embed_with(self, params, x: Array, positions: Array, *, context=None) -> Array:
        feature = self._feature(positions, context)
        features = jnp.einsum("...l,d->...ld", feature, params["direction"])
        return x + features.astype(x.dtype)


@register("normalized")
class Normalized(_ScalarFeature):
    """Naive baseline: the position divided by the sequence's last position, ``p / (n - 1)``.

    The same offset has different values in sequences of different lengths, so nothing a
    model learns about "one step apart" transfers across lengths. In a padded batch ``n``
    is each example's own length (the context's ``example_lengths``), not the batch width.
    """

    def _feature(self, positions: Array, context: HookContext | None) -> Array:
        lengths = None if context is None else context.example_lengths()
        return functional.normalized_positions(positions, lengths=lengths)


@register("integer")
class Integer(_ScalarFeature):
    """Naive baseline: the raw integer position as a feature, unbounded as it grows."""

    def _feature(self, positions: Array, context: HookContext | None) -> Array:
        return functional.integer_positions(positions)
