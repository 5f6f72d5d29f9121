"""Relative-bias encodings: position enters as ``b_h(i, j)`` added to the attention logits.

Every encoding here implements only the ``bias_fn`` hook. Its parameters (if any) are
declared per attention layer with shapes from the head count, and the function the hook
returns closes over their values as plain arrays, so the chunked attention core can
evaluate it tile by tile. The bias is added to the logits after the ``1/sqrt(d)`` scaling,
as ALiBi, KERPLE, Sandwich and FIRE prescribe.

Causal and bidirectional use share one form: these biases depend on ``|i - j|`` (T5 aside,
whose buckets distinguish the two sides when bidirectional). For causal attention the
entries above the diagonal are masked and only need to be finite, which they are.
"""

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from posenc_jax import functional
from posenc_jax._checks import check_positive_int, is_integer
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.parameters import Dims, Parameter, Specs
from posenc_jax.encodings.registry import register
from posenc_jax.typing import Array, BiasFn


@register("alibi")
class ALiBi(PositionalEncoding):
    """ALiBi: a fixed linear penalty ``-m_h |i - j|`` with geometric slopes per head.

    Attributes:
      alibi_heads: how many heads get a slope (the first ones, with the slopes of an
        ``alibi_heads``-head model); the remaining heads get no bias. None means all.

    References:
      Press, Smith and Lewis, "Train Short, Test Long: Attention with Linear Biases Enables
      Input Length Extrapolation", ICLR 2022.
    """

    alibi_heads: int | None = None

    def bias_fn_with(self, params, *, num_heads: int, causal: bool, context=None) -> BiasFn:
        check_positive_int(num_heads, "alibi num_heads")
        biased = num_heads if self.alibi_heads is None else self.alibi_heads
        if not is_integer(biased) or not 0 < biased <= num_heads:
            raise ValueError(
                f"alibi_heads={self.alibi_heads!r} must be an integer in 1..num_heads="
                f"{num_heads} (or None for every head)."
            )
        slopes = jnp.zeros((num_heads,), jnp.float32)
        slopes = slopes.at[:biased].set(functional.alibi_slopes(biased))
        return lambda q_positions, k_positions: functional.alibi_bias(
            slopes, q_positions, k_positions
        )


@register("t5")
class T5Bias(PositionalEncoding):
    """T5's learned bias: one scalar per head and relative-position bucket.

    The buckets are bidirectional for non-causal attention and one-sided for causal
    attention. The bias is added to the scaled logits; T5 adds it to unscaled logits and
    folds ``1/sqrt(d)`` into the query initialization. The two are the same model with the
    query projection scaled by ``sqrt(d)``; the table is the same.

    Each attention layer holds its own table ``[H, num_buckets]`` by default. T5 shares one
    table across the layers of a stack: ``TransformerConfig(share_encoding_across_layers=
    True)`` does that (one table per stack, under ``position_encoding``).

    Attributes:
      num_buckets: buckets in total (both sides together when bidirectional).
      max_distance: distance from which every offset shares the last bucket.

    References:
      Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
      Transformer", JMLR 2020, Section 2.1.
    """

    num_buckets: int = 32
    max_distance: int = 128

    def attention_parameters(self, dims: Dims) -> Specs:
        num_heads = check_positive_int(dims.num_heads, "t5 num_heads")
        # t5x's initializer for the relative-position embedding.
        init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        return {"relative_attention_bias": Parameter((num_heads, self.num_buckets), init)}

    def bias_fn_with(self, params, *, num_heads: int, causal: bool, context=None) -> BiasFn:
        table = params["relative_attention_bias"]
        bucket = lambda relative: functional.t5_relative_bucket(
            relative,
            bidirectional=not causal,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )

        def bias_fn(q_positions: Array, k_positions: Array) -> Array:
            # T5 buckets key minus query, the negative of relative_positions' i - j.
            buckets = bucket(-functional.relative_positions(q_positions, k_positions))
            return jnp.moveaxis(jnp.take(table, buckets, axis=1), 0, -3).astype(jnp.float32)

        return bias_fn


class _Kerple(PositionalEncoding):
    """Shared parameter handling of the two KERPLE kernels: per-head ``r1``, ``r2`` > 0."""

    # r1 ~ U(0, R1_INIT_MAX), r2 ~ U(0, R2_INIT_MAX), as in the official code.
    R1_INIT_MAX: ClassVar[float]
    R2_INIT_MAX: ClassVar[float]
    R2_MAX: ClassVar[float | None] = None
    MIN_VALUE: ClassVar[float] = 0.01

    def _bias(self, r1, r2, q_positions, k_positions) -> Array:
        raise NotImplementedError

    def attention_parameters(self, dims: Dims) -> Specs:
        num_heads = check_positive_int(dims.num_heads, "kerple num_heads")
        return {
            "r1": Parameter((num_heads,), _uniform(self.R1_INIT_MAX)),
            "r2": Parameter((num_heads,), _uniform(self.R2_INIT_MAX)),
        }

    def bias_fn_with(self, params, *, num_heads: int, causal: bool, context=None) -> BiasFn:
        # The official code clamps the stored parameters at every forward pass (a
        # projection that keeps the kernel valid, not an input clamp) and takes the
        # gradient at the clamped value. Here the forward pass uses the clamped value and
        # the gradient passes through unchanged, so a parameter past its bound (r ~ U(0, .)
        # starts below 0.01 for some heads) can still be trained back; a plain clip would
        # give it zero gradient for good.
        r1 = _clamp_keeping_gradient(params["r1"], self.MIN_VALUE, None)
        r2 = _clamp_keeping_gradient(params["r2"], self.MIN_VALUE, self.R2_MAX)
        return lambda q_positions, k_positions: self._bias(r1, r2, q_positions, k_positions)


def _clamp_keeping_gradient(x: Array, low: float, high: float | None) -> Array:
    """``clip(x, low, high)`` forward (exactly: ``x - x`` is 0), the identity backward."""
    return x - jax.lax.stop_gradient(x) + jax.lax.stop_gradient(jnp.clip(x, low, high))


def _uniform(high: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, 0.0, high)

    return init


@register("kerple_log")
class KerpleLog(_Kerple):
    """KERPLE, logarithmic kernel: ``-r1_h log(1 + r2_h |i - j|)``.

    Parameters as in the official code: ``r1 ~ U(0, 2)``, ``r2 ~ U(0, 1)``, both used as
    ``max(r, 0.01)``.

    References:
      Chi, Fan, Ramadge and Rudnicky, "KERPLE: Kernelized Relative Positional Embedding for
      Length Extrapolation", NeurIPS 2022.
    """

    R1_INIT_MAX: ClassVar[float] = 2.0
    R2_INIT_MAX: ClassVar[float] = 1.0

    def _bias(self, r1, r2, q_positions, k_positions) -> Array:
        return functional.kerple_log_bias(r1, r2, q_positions, k_positions)


@register("kerple_power")
class KerplePower(_Kerple):
    """KERPLE, power kernel: ``-r1_h |i - j|^r2_h``.

    Parameters as in the official code: ``r1 ~ U(0, 1)`` used as ``max(r1, 0.01)`` and
    ``r2 ~ U(0, 2)`` used as ``clip(r2, 0.01, 2)``.

    References:
      Chi, Fan, Ramadge and Rudnicky, "KERPLE: Kernelized Relative Positional Embedding for
      Length Extrapolation", NeurIPS 2022.
    """

    R1_INIT_MAX: ClassVar[float] = 1.0
    R2_INIT_MAX: ClassVar[float] = 2.0
    R2_MAX: ClassVar[float | None] = 2.0

    def _bias(self, r1, r2, q_positions, k_positions) -> Array:
        return functional.kerple_power_bias(r1, r2, q_positions, k_positions)


@register("sandwich")
class Sandwich(PositionalEncoding):
    """Sandwich: the sinusoid dot product ``p_i . p_j - d'/2``, scaled per head; no parameters.

    Attributes:
      dim: d', the sinusoid width. NeMo uses the attention head dim; the ``bias_fn`` hook
        is not told the head dim, so set it to match your model.
      base: the sinusoid base.

    References:
      Chi, Fan, Rudnicky and Ramadge, "Dissecting Transformer Length Extrapolation via the
      Lens of Receptive Field Analysis", ACL 2023.
    """

    dim: int = 64
    base: float = 10000.0

    def bias_fn_with(self, params, *, num_heads: int, causal: bool, context=None) -> BiasFn:
        check_positive_int(num_heads, "sandwich num_heads")
        return lambda q_positions, k_positions: functional.sandwich_bias(
            q_positions, k_positions, num_heads=num_heads, dim=self.dim, base=self.base
        )


@register("fire")
class FIRE(PositionalEncoding):
    """FIRE: a learned MLP of the progressively normalized distance.

    ``b(i, j) = f(psi(|i - j|) / psi(max(L, i)))`` with ``psi(x) = log(c x + 1)``, ``f`` a
    1 -> ``mlp_width`` -> H ReLU MLP, and learnable ``c`` and ``L = |m| * init_threshold``
    (m a learned multiplier starting at 1, as in the paper's listing). The paper is
    causal; for bidirectional attention the same symmetric ``|i - j|`` form is used.

    The MLP weights start as PyTorch's ``nn.Linear`` (uniform within
    ``+-1/sqrt(fan_in)``), the initialization of the paper's listing.

    Attributes:
      mlp_width: hidden width of f.
      init_c: initial c.
      init_threshold: L at initialization (fixed; the learned multiplier scales it).
      eps: added to the normalizer.

    References:
      Li et al., "Functional Interpolation for Relative Positions Improves Long Context
      Transformers", ICLR 2024.
    """

    mlp_width: int = 32
    init_c: float = 0.1
    init_threshold: float = 512.0
    eps: float = 1e-6

    def attention_parameters(self, dims: Dims) -> Specs:
        num_heads = check_positive_int(dims.num_heads, "fire num_heads")
        width = check_positive_int(self.mlp_width, "fire mlp_width")
        return {
            "c": Parameter((), nn.initializers.constant(self.init_c)),
            "threshold_multiplier": Parameter((), nn.initializers.ones),
            "hidden_kernel": Parameter((width,), _torch_linear_init(1)),
            "hidden_bias": Parameter((width,), _torch_linear_init(1)),
            "out_kernel": Parameter((width, num_heads), _torch_linear_init(width)),
            "out_bias": Parameter((num_heads,), _torch_linear_init(width)),
        }

    def bias_fn_with(self, params, *, num_heads: int, causal: bool, context=None) -> BiasFn:
        threshold = params["threshold_multiplier"] * self.init_threshold
        mlp = [params[name] for name in ("hidden_kernel", "hidden_bias", "out_kernel", "out_bias")]

        def bias_fn(q_positions: Array, k_positions: Array) -> Array:
            normalized = functional.fire_normalized_distance(
                q_positions, k_positions, c=params["c"], threshold=threshold, eps=self.eps
            )
            return functional.fire_mlp(normalized, *mlp)

        return bias_fn


def _torch_linear_init(fan_in: int):
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, PyTorch's default for Linear weights and biases."""
    bound = fan_in**-0.5

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
