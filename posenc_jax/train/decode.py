"""Greedy autoregressive decoding with a key/value cache.

Positions are data, so the cache needs no offset bookkeeping of its own: each call passes
the positions of the tokens it feeds, and the attention layers append keys, values and
positions to their cache (``MultiHeadAttention(decode=True)``). Randomized or shifted
positions decode the same way as ``arange``.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from posenc_jax.models.transformer import Transformer, TransformerConfig
from posenc_jax.typing import Array


def _decoding(config: TransformerConfig) -> Transformer:
    if config.architecture == "encoder":
        raise ValueError("an encoder has no autoregressive decoding; use a decoder model.")
    return Transformer(dataclasses.replace(config, decode=True))


def init_cache(
    config: TransformerConfig, batch_size: int, max_length: int, *, source: Array | None = None
) -> Any:
    """An empty cache for sequences of up to ``max_length`` tokens."""
    tokens = jnp.zeros((batch_size, max_length), jnp.int32)
    variables = _decoding(config).init(jax.random.key(0), tokens, source=source)
    return variables["cache"]


def decode_step(
    config: TransformerConfig,
    params: Any,
    cache: Any,
    tokens: Array,
    positions: Array,
    *,
    source: Array | None = None,
    source_positions: Array | None = None,
) -> tuple[Array, Any]:
    """Feeds ``tokens [B, l]`` at ``positions [B, l]``; returns their logits and the new cache."""
    logits, variables = _decoding(config).apply(
        {"params": params, "cache": cache},
        tokens,
        positions,
        source=source,
        source_positions=source_positions,
        mutable=["cache"],
    )
    return logits, variables["cache"]


@functools.partial(jax.jit, static_argnames=("config", "num_tokens"))
def greedy_decode(
    config: TransformerConfig,
    params: Any,
    prompt: Array,
    positions: Array,
    num_tokens: int,
    *,
    source: Array | None = None,
    source_positions: Array | None = None,
) -> Array:
    """Generates ``num_tokens`` tokens after ``prompt`` by argmax, one token per step.

    Args:
      config: the model's configuration (decode is switched on here).
      params: the model's parameters.
      prompt: ``[B, P]`` tokens fed at once (one "prefill" call).
      positions: ``[B, P + num_tokens - 1]``: the positions of the prompt and of every fed
        token (the encoding's ``sample_positions`` gives them).
      num_tokens: how many tokens to generate.
      source, source_positions: encoder inputs of an encoder-decoder model.

    Returns:
      ``[B, num_tokens]`` int32: the generated tokens.
    """
    batch, prompt_length = prompt.shape
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}.")
    needed = prompt_length + num_tokens - 1
    if positions.shape != (batch, needed):
        raise ValueError(
            f"positions has shape {positions.shape}; expected [B, P + num_tokens - 1] = "
            f"[{batch}, {needed}]."
        )
    cache = init_cache(config, batch, needed, source=source)
    step = functools.partial(
        decode_step, config, params, source=source, source_positions=source_positions
    )
    logits, cache = step(cache, prompt, positions[:, :prompt_length])
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

    def next_token(carry, position):
        cache, token = carry
        logits, cache = step(cache, token[:, None], position[:, None])
        token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        return (cache, token), token

    _, rest = jax.lax.scan(next_token, (cache, first), positions[:, prompt_length:].T)
    return jnp.concatenate([first[:, None], rest.T], axis=1)
