"""Why attention needs a positional encoding: without one, an encoder is blind to order.

Self-attention and the position-wise layers around it treat the input as a *set*: permuting
the input tokens only permutes the outputs (the layer is permutation-equivariant), so
nothing the encoder computes for a token can depend on where that token stands. An
encoding that adds (sinusoidal, learned) or rotates (RoPE) by position breaks the symmetry.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.models.transformer import Transformer, TransformerConfig


class PermutationTest(NamedTuple):
    """Outputs of an encoder on permuted tokens against its permuted outputs.

    Attributes:
      outputs_of_permuted: ``f(P x)``, float32 ``[L, V]``: the encoder run on the permuted
        tokens.
      permuted_outputs: ``P f(x)``, float32 ``[L, V]``: the encoder's outputs on the original
        tokens, permuted afterwards.
      permutation: int ``[L]``, the permutation applied (row ``i`` of the permuted sequence
        is original row ``permutation[i]``).
      max_error: ``max |f(P x) - P f(x)|``; ~1e-6 when the encoder is permutation-equivariant.
    """

    outputs_of_permuted: np.ndarray
    permuted_outputs: np.ndarray
    permutation: np.ndarray
    max_error: float


def permutation_test(
    encoding: PositionalEncoding,
    *,
    length: int = 12,
    d_model: int = 32,
    num_heads: int = 4,
    num_layers: int = 1,
    vocab_size: int = 32,
    seed: int = 0,
) -> PermutationTest:
    """Runs a randomly initialized encoder on a sequence and on a permutation of it.

    The tokens are distinct, so every output row differs and a permutation of the rows is
    visible. The permutation is random (never the identity).

    Args:
      encoding: the positional encoding of the encoder (e.g.
        ``posenc_jax.encodings.get("nope")``).
      length: number of tokens L (at least 2, at most ``vocab_size``).
      d_model: model width.
      num_heads: attention heads.
      num_layers: encoder layers.
      vocab_size: vocabulary size V, also the width of the outputs compared.
      seed: seeds the parameters, the tokens and the permutation.

    Returns:
      A :class:`PermutationTest`.

    Raises:
      ValueError: if ``length`` is not in ``2 .. vocab_size``.

    References:
      Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Section 3.5 ("since our
      model contains no recurrence and no convolution ... we must inject some information
      about the relative or absolute position of the tokens"); Lee et al., "Set
      Transformer", ICML 2019, Section 3 (self-attention blocks are
      permutation-equivariant).
    """
    if not 2 <= length <= vocab_size:
        raise ValueError(
            f"length={length} must be between 2 and vocab_size={vocab_size}: the test uses "
            "distinct tokens, and a single token has no order to permute."
        )
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(length)
    if np.array_equal(permutation, np.arange(length)):
        permutation = np.roll(permutation, 1)
    tokens = jnp.asarray(rng.permutation(vocab_size)[:length][None], jnp.int32)
    config = TransformerConfig(
        vocab_size=vocab_size,
        architecture="encoder",
        d_model=d_model,
        num_layers=num_layers,
        num_heads=num_heads,
        encoding=encoding,
    )
    model = Transformer(config)
    variables = model.init(jax.random.key(seed), tokens)
    outputs = np.asarray(model.apply(variables, tokens)[0])
    outputs_of_permuted = np.asarray(model.apply(variables, tokens[:, permutation])[0])
    permuted_outputs = outputs[permutation]
    return PermutationTest(
        outputs_of_permuted=outputs_of_permuted,
        permuted_outputs=permuted_outputs,
        permutation=permutation,
        max_error=float(np.max(np.abs(outputs_of_permuted - permuted_outputs))),
    )
