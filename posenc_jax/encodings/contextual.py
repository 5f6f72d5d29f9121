"""Relative encodings that need the queries' and keys' content: Shaw, Transformer-XL, CoPE.

Each adds to the full logit map through the ``contextual`` hook (and Shaw also to the
outputs), so each sets ``needs_dense = True``: attention runs them on the dense path.
Their parameters are declared per attention layer, with shapes from its head dim.
"""

import flax.linen as nn

from posenc_jax import functional
from posenc_jax._checks import check_positive_int
from posenc_jax.encodings.base import Contextual, PositionalEncoding
from posenc_jax.encodings.parameters import Dims, Parameter, Specs
from posenc_jax.encodings.registry import register


@register("shaw")
class Shaw(PositionalEncoding):
    """Learned relative key and value vectors for distances clipped to +-k.

    Logits ``q_i . (k_j + a^K_{clip(j - i)}) / sqrt(d)`` and outputs
    ``sum_j alpha_ij (v_j + a^V_{clip(j - i)})``; both tables are ``[2k + 1, K]`` and shared
    by the heads of a layer, as in tensor2tensor.

    Attributes:
      max_distance: k, the clipping distance (tensor2tensor's ``transformer_relative`` uses
        20; 16 here).
      stddev: initializer scale of the tables.

    References:
      Shaw, Uszkoreit & Vaswani, "Self-Attention with Relative Position Representations",
      NAACL 2018.
    """

    needs_dense = True

    max_distance: int = 16
    stddev: float = 0.02

    def attention_parameters(self, dims: Dims) -> Specs:
        check_positive_int(self.max_distance, "Shaw max_distance")
        shape = (2 * self.max_distance + 1, dims.head_dim)
        init = nn.initializers.normal(self.stddev)
        return {"relative_keys": Parameter(shape, init), "relative_values": Parameter(shape, init)}

    def contextual_with(
        self, params, *, num_heads: int, head_dim: int, causal: bool, context=None
    ) -> Contextual:
        key_table, value_table = params["relative_keys"], params["relative_values"]
        max_distance = self.max_distance

        def logits_fn(logits, q, k, q_positions, k_positions, allowed, scale):
            del k, allowed
            relative = functional.shaw_key_logits(
                q, key_table, q_positions, k_positions, max_distance
            )
            return logits + scale * relative

        def values_fn(weights, q_positions, k_positions):
            return functional.shaw_value_outputs(
                weights, value_table, q_positions, k_positions, max_distance
            )

        return Contextual(logits=logits_fn, values=values_fn)


@register("transformer_xl")
class TransformerXL(PositionalEncoding):
    """Transformer-XL scores ``((q_i + u).k_j + (q_i + v).W_R r_{i-j}) / sqrt(d)``.

    ``r`` is the fixed sinusoid of the distance, ``u`` and ``v`` ``[H, K]`` and
    ``W_R [D_r, H, K]`` are learned per layer (the official PyTorch code shares ``u`` and
    ``v`` across layers; its TensorFlow code unties them with ``untie_r``).

    Attributes:
      relative_dim: D_r, the width of the sinusoid (default ``H * K``, the model width in
        the paper); must be even.
      base: sinusoid wavelength base.
      stddev: initializer scale of u and v (0.02 as in the official code).

    References:
      Dai et al., "Transformer-XL: Attentive Language Models Beyond a Fixed-Length
      Context", ACL 2019, Section 3.3.
    """

    needs_dense = True

    relative_dim: int | None = None
    base: float = 10000.0
    stddev: float = 0.02

    def attention_parameters(self, dims: Dims) -> Specs:
        num_heads, head_dim = dims.num_heads, dims.head_dim
        relative_dim = self.relative_dim or num_heads * head_dim
        if relative_dim <= 0 or relative_dim % 2:
            raise ValueError(
                f"Transformer-XL relative_dim must be a positive even number, got {relative_dim}."
            )
        init = nn.initializers.normal(self.stddev)
        kernel_init = nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2))
        return {
            "content_bias": Parameter((num_heads, head_dim), init),
            "position_bias": Parameter((num_heads, head_dim), init),
            "relative_kernel": Parameter((relative_dim, num_heads, head_dim), kernel_init),
        }

    def contextual_with(
        self, params, *, num_heads: int, head_dim: int, causal: bool, context=None
    ) -> Contextual:
        base = self.base

        def logits_fn(logits, q, k, q_positions, k_positions, allowed, scale):
            del allowed
            relative = functional.transformer_xl_logits(
                q,
                k,
                params["content_bias"],
                params["position_bias"],
                params["relative_kernel"],
                q_positions,
                k_positions,
                base=base,
            )
            return logits + scale * relative

        return Contextual(logits=logits_fn)


@register("cope")
class CoPE(PositionalEncoding):
    """Contextual positions: counts of gated tokens, with interpolated position logits.

    Gates ``sigmoid(q_i.k_j / sqrt(d))`` on allowed pairs, positions
    ``p_ij = sum_{t=j}^{i} g_it`` clipped to ``num_positions - 1``, and logits
    ``(q_i.k_j + q_i.e[p_ij]) / sqrt(d)`` with ``e[p]`` linearly interpolated. Defined for
    causal attention only. The embeddings ``e [npos, K]`` are shared by the heads of a layer
    and start at zero, as in the official code.

    Attributes:
      num_positions: npos (positions 0 .. npos - 1). The official code uses the context
        length + 1; x-transformers defaults to 16, as here.

    References:
      Golovneva, Wang, Weston & Sukhbaatar, "Contextual Position Encoding: Learning to
      Count What's Important", arXiv 2405.18719, 2024.
    """

    causal_only = True
    needs_dense = True

    num_positions: int = 16

    def attention_parameters(self, dims: Dims) -> Specs:
        num_positions = check_positive_int(self.num_positions, "CoPE num_positions")
        shape = (num_positions, dims.head_dim)
        return {"position_embeddings": Parameter(shape, nn.initializers.zeros)}

    def contextual_with(
        self, params, *, num_heads: int, head_dim: int, causal: bool, context=None
    ) -> Contextual:
        if not causal:
            raise ValueError(
                "CoPE is defined for causal attention only (positions count the gated "
                "tokens between key and query); build the attention with causal=True."
            )
        position_embeddings = params["position_embeddings"]
        num_positions = self.num_positions

        def logits_fn(logits, q, k, q_positions, k_positions, allowed, scale):
            del k, q_positions, k_positions
            # The scaled content logits double as the gate logits (official code).
            gates = nn.sigmoid(logits)
            if allowed is not None:
                gates = gates * allowed
            positions = functional.cope_positions(gates, num_positions)
            return logits + scale * functional.cope_logits(q, position_embeddings, positions)

        return Contextual(logits=logits_fn, causal=True)
