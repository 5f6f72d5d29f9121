"""Content-dependent decays: position enters as the sum of learned per-token log decays.

Each encoding here implements only the ``decay`` hook: from the layer's input (the hook
context's ``inputs [B, L, D]``) it computes every token's log decay ``a_t [B, H, L]``,
and attention adds ``sum_{j < s <= i} a_s = c_i - c_j`` to the logit of query i and key j
(:mod:`posenc_jax.functional.decay`). Attention accumulates ``c`` over the sequence (padding
adds nothing), keeps the cached keys' ``c`` when decoding and passes ``(c_q, c_k)`` to the
core as a separable bias, which every backend runs in O(L) memory with exact gradients.
Both are defined for causal attention: for a key after the query, ``c_i - c_j`` would be
a growing reward for the future.
"""

import flax.linen as nn
import jax.numpy as jnp

from posenc_jax import functional
from posenc_jax._checks import check_positive_int
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.parameters import Dims, Parameter, Specs
from posenc_jax.encodings.registry import register
from posenc_jax.typing import Array

FOX_GATES = ("full", "bias_only", "fixed")


def _layer_input(context, name: str) -> Array:
    if context is None or context.inputs is None:
        raise ValueError(
            f"{name} computes its decay from the layer's input, which this call's hook "
            "context does not carry; call the decay hook from an attention layer (it passes "
            "context=HookContext(..., inputs=x))."
        )
    return context.inputs


def _check_causal(causal: bool, name: str) -> None:
    if not causal:
        raise ValueError(
            f"{name} is defined for causal attention only (c_i - c_j sums the decays of the "
            "tokens between an earlier key and its query); build the attention with "
            "causal=True or choose another encoding."
        )


@register("fox")
class ForgettingTransformer(PositionalEncoding):
    """The Forgetting Transformer: a forget gate per head, logits ``q.k / sqrt(d) + c_i - c_j``.

    ``f_t = sigmoid(w_h . x_t + b_h)`` from the layer's input ``x_t``, ``c_t = sum_{s <= t}
    log f_s`` (causal), so the weight of key j for query i is scaled by the product of the
    gates of the tokens after j up to i. No other position enters (the paper's FoX uses no
    RoPE).

    Attributes:
      gate: the official code's forget-gate types: "full" (data-dependent: ``w [D, H]``,
        ``b [H]``, initialized normal(0.02) and 0, the default), "bias_only" (a learned
        data-independent ``b [H]``) or "fixed" (``b`` set by ``decay_time``, not learned).
      decay_time: ``(T_min, T_max)``: initialize ``b`` so that head h's constant gate
        decays attention with time constant ``T_h``, the T's log-spaced from ``T_min`` to
        ``T_max`` (``b_h = -log(exp(1 / T_h) - 1)``); required for "fixed". The official
        code allows it only for "bias_only" and "fixed"; here it also sets the "full" gate's
        starting bias. None: ``b = 0`` (``f = 1/2`` at initialization).
      kernel_stddev: standard deviation of ``w``'s initialization (the official
        ``initializer_range``).

    References:
      Lin, Nikishin, He & Courville, "Forgetting Transformer: Softmax Attention with a
      Forget Gate", ICLR 2025 (arXiv 2503.02130), Eqs. 4-6; official code
      zhixuan-lin/forgetting-transformer (``fgate_type``, ``fgate_bias_init``).
    """

    causal_only = True

    gate: str = "full"
    decay_time: tuple[float, float] | None = None
    kernel_stddev: float = 0.02

    def __post_init__(self):
        if self.gate not in FOX_GATES:
            raise ValueError(f"fox gate={self.gate!r}; valid: {', '.join(FOX_GATES)}.")
        if self.decay_time is not None:
            if len(self.decay_time) != 2:
                raise ValueError(
                    f"fox decay_time={self.decay_time!r}; give (T_min, T_max) or None."
                )
            functional.decay_time_bias(1, *self.decay_time)  # checks the values
            object.__setattr__(self, "decay_time", tuple(float(t) for t in self.decay_time))
        elif self.gate == "fixed":
            raise ValueError(
                "fox gate='fixed' sets its biases from decay_time; give decay_time=(T_min, "
                "T_max), e.g. (1.0, 1024.0)."
            )
        super().__post_init__()

    def _bias(self, num_heads: int) -> Array:
        if self.decay_time is None:
            return jnp.zeros((num_heads,), jnp.float32)
        return functional.decay_time_bias(num_heads, *self.decay_time)

    def attention_parameters(self, dims: Dims) -> Specs:
        if self.gate == "fixed":
            return {}
        num_heads = check_positive_int(dims.num_heads, "fox num_heads")

        def bias_init(key, shape, dtype):
            del key
            return self._bias(shape[0]).astype(dtype)

        specs = {"gate_bias": Parameter((num_heads,), bias_init)}
        if self.gate == "full":
            kernel_init = nn.initializers.normal(self.kernel_stddev)
            specs = {"gate_kernel": Parameter((dims.d_model, num_heads), kernel_init), **specs}
        return specs

    def decay_with(self, params, *, num_heads: int, causal: bool, context=None) -> Array:
        _check_causal(causal, "fox")
        x = _layer_input(context, "fox")
        if self.gate == "full":
            return functional.log_forget_gate(x, params["gate_kernel"], params["gate_bias"])
        bias = params["gate_bias"] if self.gate == "bias_only" else self._bias(num_heads)
        return functional.log_forget_gate(x, None, bias)


@register("cable")
class Cable(PositionalEncoding):
    """Cable: token biases ``b_t = sum_{s <= t} -softplus(W_h x_s)`` added as ``b_i - b_j``.

    Each head projects the layer's input to one number per token; its negative softplus is
    the token's (non-positive) bias increment, accumulated causally. It is FoX's forget
    gate with ``w = -W`` and no bias (``log sigmoid(-z) = -softplus(z)``).

    Attributes:
      kernel_stddev: standard deviation of ``W [D, H]``'s initialization.

    References:
      Veisi, Amirzadeh & Mansourian, "Context-aware Biases for Length Extrapolation",
      arXiv 2503.08067, 2025.
    """

    causal_only = True

    kernel_stddev: float = 0.02

    def attention_parameters(self, dims: Dims) -> Specs:
        num_heads = check_positive_int(dims.num_heads, "cable num_heads")
        init = nn.initializers.normal(self.kernel_stddev)
        return {"bias_kernel": Parameter((dims.d_model, num_heads), init)}

    def decay_with(self, params, *, num_heads: int, causal: bool, context=None) -> Array:
        _check_causal(causal, "cable")
        return functional.cable_log_decay(_layer_input(context, "cable"), params["bias_kernel"])
