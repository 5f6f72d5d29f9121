"""Length-dependent attention temperature: logits multiplied by a factor that grows with length.

A softmax over n keys spreads its mass thinner as n grows; multiplying the logits by a
factor that grows like ``log n`` keeps the attention about as sharp at 8N as at N. The
factor is a pure function of the query positions and of the number of keys each query
may attend (its causal prefix, its example's real keys: padding and a cache's empty slots
are not keys), so the dense and the chunked attention paths apply it identically, tile by
tile, and a padded or cached query gets the factor of the same query unpadded.
"""

import dataclasses
import math

import jax.numpy as jnp

from posenc_jax.typing import Array

TEMPERATURE_KINDS = ("log_length", "log_position", "log_floor")


def log_length_scale(num_keys: int, *, training_length: int | None = None) -> float:
    """``ln n`` (Chiang & Cholak 2022), or ``log_N(n)`` when a training length N is given.

    This is Scalable-Softmax (SSMax, Nakanishi 2025) with its scalar fixed instead of
    learned: SSMax computes ``softmax(s ln(n) z)`` over the n keys a query attends, with
    ``s`` a learnable parameter per layer and head (and, in a variant, a learnable bias:
    ``(s ln(n) + b) z``); here ``s = 1`` (or ``1 / ln N``), the same for every head, and
    nothing is learned. The n is the same as SSMax's: the keys the query may attend
    (its causal prefix, its example's real keys).

    Args:
      num_keys: n, the number of keys attended over.
      training_length: N; when given the factor is ``ln n / ln N``, which is 1 at the
        training length (the normalization of Su's "entropy invariance" argument).

    Returns:
      The factor as a Python float.

    References:
      Chiang & Cholak, "Overcoming a Theoretical Limitation of Self-Attention", ACL 2022
      (the query input is multiplied by ``log n``; without a query bias this multiplies the
      logits by ``log n``); Nakanishi, "Scalable-Softmax Is Superior for Attention", arXiv
      2501.19399, 2025 (SSMax, Eq. 2).
    """
    if num_keys < 1:
        raise ValueError(f"num_keys must be positive, got {num_keys}.")
    factor = math.log(num_keys)
    if training_length is not None:
        factor /= math.log(training_length)
    return factor


def log_position_scale(q_positions: Array, training_length: int) -> Array:
    """Per-query ``log_N(p + 1)`` beyond the training length N, 1 within it (Qwen ``logn``).

    Args:
      q_positions: integer query positions ``[..., L]`` (0-based).
      training_length: N, the context length the model was trained at.

    Returns:
      float32 ``[..., L]``: ``max(1, ln(p + 1) / ln N)``; exactly 1 for ``p + 1 <= N``.

    References:
      Qwen-1 ``use_logn_attn`` (QwenLM ``modeling_qwen.py``, ``logn_list``): queries at
      0-based position p are multiplied by ``log_N(p + 1)`` when ``p + 1 > N``.
    """
    _check_training_length(training_length)
    count = jnp.asarray(q_positions, jnp.float32) + 1.0
    factor = jnp.log(jnp.maximum(count, 1.0)) / math.log(training_length)
    return jnp.where(count > training_length, factor, 1.0)


def log_floor_scale(q_positions: Array, *, floor_scale: int, scale: float) -> Array:
    """Llama 4's ``1 + scale * ln(1 + floor((p + 1) / floor_scale))`` per query, float32.

    1 for positions below ``floor_scale - 1``, then growing by steps of ``floor_scale``:
    a stepped, position-based form of SSMax's ``ln n`` (whose code it cites), with
    ``ln(1 + floor((p + 1) / s))`` in place of ``ln n`` and a fixed strength.

    Hugging Face's ``Llama4TextAttention`` multiplies the queries of its NoPE layers
    (``attn_temperature_tuning`` and not ``use_rope``) by this factor, after the
    projection, with ``p`` the token's index in the sequence (``cache_position``, which
    counts left padding); here ``p`` is the token's position. A NoPE layer has no bias, so
    multiplying the logit row (as :class:`AttentionTemperature` does) is multiplying the
    query. ``Llama4TextConfig`` defaults to ``attn_temperature_tuning`` on with
    ``floor_scale`` 8192 and ``attn_scale`` 0.1, the values loaders of the released Scout
    and Maverick checkpoints use (vLLM turns the temperature on by default only for
    contexts over 32K tokens) and the defaults here: the factor is 1 up to position 8,190,
    then 1.0693 from 8,191, 1.1099 from 16,383, and 1.4812 at position 999,999.

    References:
      Meta, Llama 4 (Hugging Face ``transformers/models/llama4/modeling_llama4.py``,
      ``Llama4TextAttention``; ``configuration_llama4.py``: ``attn_temperature_tuning``,
      ``floor_scale`` 8192, ``attn_scale`` 0.1); Nakanishi, "Scalable-Softmax Is Superior
      for Attention", arXiv 2501.19399, 2025.
    """
    count = jnp.asarray(q_positions, jnp.float32) + 1.0
    return 1.0 + scale * jnp.log1p(jnp.floor(count / floor_scale))


@dataclasses.dataclass(frozen=True)
class AttentionTemperature:
    """Which length-dependent factor multiplies the attention logits.

    The factor multiplies each query's whole logit row (content, bias and contextual terms)
    before the softmax, i.e. it is an inverse softmax temperature. Chiang & Cholak and Qwen
    multiply the query instead; without a position bias both are the same.

    Attributes:
      kind: "log_length" (``ln n``, n the number of keys; ``log_N(n)`` when
        ``training_length`` is set: SSMax with a fixed, shared scalar), "log_position"
        (``log_N(p + 1)`` for query positions p past the training length N, 1 before;
        ``training_length`` is required) or "log_floor" (Llama 4's NoPE-layer query
        temperature: ``1 + scale * ln(1 + floor((p + 1) / floor_scale))``).
      training_length: N.
      floor_scale: the step of "log_floor" (8192 in Llama 4).
      scale: the strength of "log_floor" (0.1 in Llama 4).

    References:
      Chiang & Cholak, ACL 2022; Qwen-1 ``use_logn_attn``; Llama 4 (Hugging Face
      ``modeling_llama4.py``); Nakanishi, "Scalable-Softmax Is Superior for Attention",
      arXiv 2501.19399, 2025.
    """

    kind: str = "log_position"
    training_length: int | None = None
    floor_scale: int = 8192
    scale: float = 0.1

    def __post_init__(self):
        if self.kind not in TEMPERATURE_KINDS:
            raise ValueError(
                f"attention temperature kind={self.kind!r}; valid: {', '.join(TEMPERATURE_KINDS)}."
            )
        if self.kind == "log_position" and self.training_length is None:
            raise ValueError(
                "attention temperature 'log_position' needs training_length (the context "
                "length the model was trained at)."
            )
        if self.training_length is not None:
            _check_training_length(self.training_length)
        if not isinstance(self.floor_scale, int) or self.floor_scale <= 0:
            raise ValueError(f"floor_scale must be a positive integer, got {self.floor_scale!r}.")
        if not math.isfinite(self.scale):
            raise ValueError(f"scale must be finite, got {self.scale!r}.")

    def __call__(self, q_positions: Array, num_keys: int | Array) -> Array:
        """Float32 factor ``[..., L]`` for queries at ``q_positions [..., L]``.

        Args:
          q_positions: integer ``[..., L]``.
          num_keys: the number of keys n each query attends, an int for every query or an
            array broadcastable to ``[..., L]`` (attention passes each query's count). A
            query with no key (n = 0) gets the factor of n = 1; its row is empty anyway.
        """
        if self.kind == "log_position":
            return log_position_scale(q_positions, self.training_length)
        if self.kind == "log_floor":
            return log_floor_scale(q_positions, floor_scale=self.floor_scale, scale=self.scale)
        if isinstance(num_keys, int):
            factor = log_length_scale(num_keys, training_length=self.training_length)
            return jnp.full(jnp.shape(q_positions), factor, jnp.float32)
        count = jnp.maximum(jnp.asarray(num_keys, jnp.float32), 1.0)
        factor = jnp.log(jnp.broadcast_to(count, jnp.shape(q_positions)))
        if self.training_length is not None:
            factor = factor / math.log(self.training_length)
        return factor


def _check_training_length(training_length: int) -> None:
    if not isinstance(training_length, int) or training_length < 2:
        raise ValueError(
            f"training_length must be an integer >= 2 (log base), got {training_length!r}."
        )
