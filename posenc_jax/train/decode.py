"""Greedy autoregressive decoding with a key/value cache.

Positions are data, so the cache needs no offset bookkeeping of its own: each call passes
the positions of the tokens it feeds, and the attention layers append keys, values and
positions to their cache (``MultiHeadAttention(decode=True)``). Randomized or shifted
positions decode the same way as ``arange``. The one exception is the rotary scalings
whose frequencies follow the current length (dynamic NTK, LongRoPE): cached keys keep the
frequencies of the step that wrote them (:mod:`posenc_jax.encodings.rotary`).
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.models.transformer import Transformer, TransformerConfig
from posenc_jax.train.step import model_positions
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


def answer_start(weights: np.ndarray) -> int | None:
    """Index of the first answer target when every row's answer is the same suffix.

    Greedy decoding needs a prompt and an answer: the targets marked by ``weights`` must be
    one contiguous suffix, at the same place in every row (prompt-then-answer tasks).
    Returns None otherwise (for example language modelling, where every token counts).
    """
    weights = np.asarray(weights) > 0
    starts = {int(np.argmax(row)) for row in weights}
    if len(starts) != 1:
        return None
    start = starts.pop()
    if start == 0 or not np.all(weights[:, start:]) or np.any(weights[:, :start]):
        return None
    return start


def greedy_metric_sums(
    config: TransformerConfig, params: Any, batch: dict, positions: dict
) -> dict:
    """Exact-match and per-token accuracy sums of greedy decoding on one batch.

    The prompt is the batch's inputs up to the first answer target; the model then
    generates the answer token by token from its own predictions, with the positions the
    encoding chose for the whole sequence. Returns None if the batch has no common answer
    suffix.
    """
    start = answer_start(batch["weights"])
    if start is None:
        return None
    targets = batch["targets"][:, start:]
    generated = greedy_decode(
        config,
        params,
        batch["inputs"][:, : start + 1],
        positions["positions"],
        targets.shape[1],
        source=batch.get("source"),
        source_positions=positions.get("source_positions"),
    )
    correct = generated == targets
    return {
        "greedy_correct_tokens": jnp.sum(correct),
        "greedy_tokens": correct.size,
        "greedy_correct_sequences": jnp.sum(jnp.all(correct, axis=1)),
        "greedy_sequences": correct.shape[0],
    }


def evaluate_greedy(spec, params: Any, batches, *, key) -> list[dict] | None:
    """Greedy-decoding accuracy of every seed of stacked ``params`` over ``batches``.

    Positions come from the same keys as teacher-forced evaluation (``evaluate``), so both
    read the same examples at the same positions. Returns None for tasks without a common
    answer suffix (see :func:`answer_start`).
    """
    num_seeds = jax.tree.leaves(params)[0].shape[0]
    totals = [None] * num_seeds
    for index, batch in enumerate(batches):
        positions = model_positions(spec.model, batch, jax.random.fold_in(key, index))
        for seed in range(num_seeds):
            seed_params = jax.tree.map(lambda leaf, s=seed: leaf[s], params)
            sums = greedy_metric_sums(spec.model, seed_params, batch, positions)
            if sums is None:
                return None
            sums = {k: float(v) for k, v in sums.items()}
            previous = totals[seed]
            totals[seed] = sums if previous is None else {k: previous[k] + sums[k] for k in sums}
    return [
        {
            "greedy_token_accuracy": t["greedy_correct_tokens"] / t["greedy_tokens"],
            "greedy_sequence_accuracy": t["greedy_correct_sequences"] / t["greedy_sequences"],
        }
        for t in totals
    ]
