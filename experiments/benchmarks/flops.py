"""Counted FLOPs of the study's Transformer: the numerator of model FLOPs utilization.

Convention (stated once, used by every benchmark here):

* Only matrix products count, at 2 FLOPs per multiply-add: the q/k/v/out projections, the
  feed-forward block, the output logits, and attention's two products ``q k^T`` and
  ``weights v``. Softmax, layer norms, rotations, position biases, the embedding lookup
  and the optimizer are elementwise or gathers and are not counted (FIRE's per-pair MLP is
  a product, but it belongs to the encoding, not the model; ``cost_analysis`` shows it).
* A training step is forward + backward = 3x the forward products (the backward pass of
  ``y = x W`` is two products of the same size, one for ``dx`` and one for ``dW``), as in
  Kaplan et al. (2020) and the PaLM appendix's MFU.
* Attention counts the (query, key) pairs the implementation actually multiplies: every
  ``L x S`` pair for the dense path (it computes the masked half too), and only the tiles
  it visits for the chunked path (causal tiles entirely in the future are skipped). Work
  done twice by design (the chunked backward pass recomputes each tile's logits instead
  of storing them) is not counted: it is hardware FLOPs, not model FLOPs.

So a dense causal model and a chunked causal one are credited different attention FLOPs
for the same tokens; compare their speed by tokens per second, their efficiency by MFU.

References:
  Kaplan et al., "Scaling Laws for Neural Language Models", 2020 (6N per token);
  Chowdhery et al., "PaLM", 2022, Appendix B (model FLOPs utilization).
"""

import dataclasses
import math

from posenc_jax.models.transformer import TransformerConfig


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """Forward matmul FLOPs of one batch, split by where they are spent.

    Attributes:
      projections: q, k, v and output projections, all layers.
      mlp: feed-forward blocks, all layers.
      logits: the output layer.
      attention: ``q k^T`` and ``weights v``, all layers, over the pairs computed.
      attention_pairs: (query, key) pairs computed per batch row, head and layer.
    """

    projections: int
    mlp: int
    logits: int
    attention: int
    attention_pairs: int

    @property
    def forward(self) -> int:
        return self.projections + self.mlp + self.logits + self.attention

    @property
    def train_step(self) -> int:
        """Forward and backward: three times the forward products."""
        return 3 * self.forward


def attention_pairs(
    length: int, *, causal: bool, block_size: int | None, skips_blocks: bool = True
) -> int:
    """(query, key) pairs multiplied for one batch row and head of self-attention.

    Args:
      length: L = S, with positions ``arange(L)``.
      causal: whether future keys are masked.
      block_size: the chunked path's tile edge; None for dense (all ``L^2`` pairs).
      skips_blocks: whether the chunked path skips tiles entirely in the future.

    Returns:
      ``L^2`` for dense, otherwise the padded tile area of every visited tile.
    """
    if block_size is None:
        return length * length
    block = min(block_size, length)
    num_blocks = math.ceil(length / block)
    if not (causal and skips_blocks):
        return (num_blocks * block) ** 2
    visited = 0
    for q_index in range(num_blocks):
        last_query = min((q_index + 1) * block, length) - 1
        # Key block j is visited when its first position is not after the last query.
        visited += sum(1 for k_index in range(num_blocks) if k_index * block <= last_query)
    return visited * block * block


def transformer_flops(
    config: TransformerConfig, batch: int, length: int, *, block_size: int | None
) -> FlopCount:
    """Forward matmul FLOPs of a decoder-only or encoder ``Transformer`` on ``[batch, length]``.

    Args:
      config: the model (architecture "decoder" or "encoder").
      batch: B.
      length: L.
      block_size: tile edge if attention runs chunked, None if dense (see
        :func:`attention_pairs`).

    Returns:
      The :class:`FlopCount` of one forward pass.

    Raises:
      ValueError: for an encoder-decoder config (its cross-attention is not counted here).
    """
    if config.architecture == "encoder_decoder":
        raise ValueError("transformer_flops counts 'decoder' and 'encoder' models only.")
    d_model, heads = config.d_model, config.num_heads
    kv_heads = config.num_kv_heads or heads
    head_dim = d_model // heads
    mlp_dim = config.mlp_dim or 4 * d_model
    tokens = batch * length
    layers = config.num_layers
    projection_width = (heads + 2 * kv_heads) * head_dim + heads * head_dim
    pairs = attention_pairs(length, causal=config.architecture == "decoder", block_size=block_size)
    return FlopCount(
        projections=2 * tokens * d_model * projection_width * layers,
        mlp=2 * tokens * 2 * d_model * mlp_dim * layers,
        logits=2 * tokens * d_model * config.vocab_size,
        attention=2 * 2 * batch * heads * pairs * head_dim * layers,
        attention_pairs=pairs,
    )
