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
from posenc_jax.train.sharding import to_host
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
    # Only the cache's shapes matter here; the embedding reads position 0 everywhere, which
    # every table has (positions of an embedding indexed by the task's need not reach L).
    variables = _decoding(config).init(
        jax.random.key(0), tokens, embed_positions=jnp.zeros_like(tokens), source=source
    )
    return variables["cache"]


def decode_step(
    config: TransformerConfig,
    params: Any,
    cache: Any,
    tokens: Array,
    positions: Array,
    *,
    embed_positions: Array | None = None,
    source: Array | None = None,
    source_positions: Array | None = None,
) -> tuple[Array, Any]:
    """Feeds ``tokens [B, l]`` at ``positions [B, l]`` (their ``embed`` hook at
    ``embed_positions [B, l]`` when given); returns their logits and the new cache."""
    logits, variables = _decoding(config).apply(
        {"params": params, "cache": cache},
        tokens,
        positions,
        embed_positions=embed_positions,
        source=source,
        source_positions=source_positions,
        mutable=["cache"],
    )
    return logits, variables["cache"]


def _fed_positions(positions: Array, embed_positions: Array | None, shape, whose: str) -> Array:
    """The ``embed`` hook's positions of fed tokens (default: ``positions``), after checking
    that both are shaped as the tokens (``shape``, the ``whose`` shape in the message)."""
    for name, array in (("positions", positions), ("embed_positions", embed_positions)):
        if array is not None and array.shape != shape:
            raise ValueError(f"{name} has shape {array.shape}; expected the {whose} {shape}.")
    return positions if embed_positions is None else embed_positions


@functools.partial(jax.jit, static_argnames=("config",))
def teacher_forced_logits(
    config: TransformerConfig,
    params: Any,
    tokens: Array,
    positions: Array,
    *,
    embed_positions: Array | None = None,
) -> Array:
    """Logits of decoding ``tokens`` one token per step with ``config``'s cache, each step
    fed the true token (teacher forcing).

    With a full cache (``config.streaming`` None) this is the model's forward pass over
    ``tokens``, computed step by step; with a StreamingLLM cache
    (:class:`~posenc_jax.attention.cache.Streaming`) each step attends only the tokens the
    cache keeps, at positions counted inside it.

    Args:
      config: the model's configuration (decode is switched on here).
      params: the model's parameters.
      tokens: ``[B, L]`` the tokens fed, one per step.
      positions: ``[B, L]`` their positions.
      embed_positions: None, or ``[B, L]`` the ``embed`` hook's positions of the same
        tokens (default: ``positions``).

    Returns:
      ``[B, L, V]``: the logits of each step (the prediction of the token after it).
    """
    batch, length = tokens.shape
    embed_positions = _fed_positions(positions, embed_positions, tokens.shape, "tokens'")

    def step(cache, fed):
        token, position, embed_position = (x[:, None] for x in fed)
        logits, cache = decode_step(
            config, params, cache, token, position, embed_positions=embed_position
        )
        return cache, logits[:, 0]

    fed = (tokens.T, positions.T, embed_positions.T)
    _, logits = jax.lax.scan(step, init_cache(config, batch, length), fed)
    return jnp.swapaxes(logits, 0, 1)


@functools.partial(jax.jit, static_argnames=("config", "num_tokens"))
def greedy_decode(
    config: TransformerConfig,
    params: Any,
    prompt: Array,
    positions: Array,
    num_tokens: int,
    *,
    embed_positions: Array | None = None,
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
      embed_positions: None, or the ``embed`` hook's positions of the same tokens, shaped
        as ``positions`` (the encoding's ``embed_positions`` gives them).
      source, source_positions: encoder inputs of an encoder-decoder model.

    Returns:
      ``[B, num_tokens]`` int32: the generated tokens.
    """
    batch, prompt_length = prompt.shape
    if num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}.")
    needed = prompt_length + num_tokens - 1
    for name, array in (("positions", positions), ("embed_positions", embed_positions)):
        if array is not None and array.shape != (batch, needed):
            raise ValueError(
                f"{name} has shape {array.shape}; expected [B, P + num_tokens - 1] = "
                f"[{batch}, {needed}]."
            )
    if embed_positions is None:
        embed_positions = positions
    cache = init_cache(config, batch, needed, source=source)
    step = functools.partial(
        decode_step, config, params, source=source, source_positions=source_positions
    )
    logits, cache = step(
        cache,
        prompt,
        positions[:, :prompt_length],
        embed_positions=embed_positions[:, :prompt_length],
    )
    first = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

    def next_token(carry, fed_positions):
        cache, token = carry
        position, embed_position = fed_positions
        logits, cache = step(
            cache, token[:, None], position[:, None], embed_positions=embed_position[:, None]
        )
        token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        return (cache, token), token

    rest_positions = (positions[:, prompt_length:].T, embed_positions[:, prompt_length:].T)
    _, rest = jax.lax.scan(next_token, (cache, first), rest_positions)
    return jnp.concatenate([first[:, None], rest.T], axis=1)


@functools.partial(jax.jit, static_argnames=("config",))
def greedy_fill(
    config: TransformerConfig,
    params: Any,
    inputs: Array,
    positions: Array,
    prompt_lengths: Array,
    num_steps: Array | int | None = None,
    *,
    embed_positions: Array | None = None,
    source: Array | None = None,
    source_positions: Array | None = None,
) -> Array:
    """Greedy decoding of every row from its own prompt, one token per step.

    Row ``b`` is fed its first ``prompt_lengths[b]`` input tokens, then its own
    predictions: at step ``t`` the input is ``inputs[b, t]`` while ``t <
    prompt_lengths[b]`` and the token predicted at step ``t - 1`` after. Rows whose
    answers start at different offsets (examples of several lengths in one batch) thus
    decode together, in one compiled program per batch shape.

    Args:
      config: the model's configuration (decode is switched on here).
      params: the model's parameters.
      inputs: ``[B, T]`` teacher-forced inputs (only each row's prompt is read).
      positions: ``[B, T]`` the positions of every input token.
      prompt_lengths: int ``[B]``, each at least 1.
      num_steps: how many steps to run (default T; may be traced, so a batch whose
        answers end early stops early without another compilation).
      embed_positions: None, or ``[B, T]`` the ``embed`` hook's positions of every input
        token (the encoding's ``embed_positions``).
      source, source_positions: encoder inputs of an encoder-decoder model.

    Returns:
      ``[B, T]`` int32: the token predicted at every step run (the prediction of target
      t), zeros after ``num_steps``.
    """
    batch, width = inputs.shape
    embed_positions = _fed_positions(positions, embed_positions, inputs.shape, "inputs'")
    num_steps = width if num_steps is None else jnp.minimum(num_steps, width)
    step = functools.partial(
        decode_step, config, params, source=source, source_positions=source_positions
    )

    def next_token(carry):
        t, cache, predicted, generated = carry
        fed = jax.lax.dynamic_index_in_dim(inputs, t, 1, keepdims=False)
        token = jnp.where(t < prompt_lengths, fed, predicted)
        logits, cache = step(
            cache,
            token[:, None],
            jax.lax.dynamic_slice_in_dim(positions, t, 1, 1),
            embed_positions=jax.lax.dynamic_slice_in_dim(embed_positions, t, 1, 1),
        )
        predicted = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
        generated = jax.lax.dynamic_update_slice_in_dim(generated, predicted[:, None], t, 1)
        return t + 1, cache, predicted, generated

    init = (
        jnp.zeros((), jnp.int32),
        init_cache(config, batch, width, source=source),
        inputs[:, 0],
        jnp.zeros((batch, width), jnp.int32),
    )
    return jax.lax.while_loop(lambda carry: carry[0] < num_steps, next_token, init)[3]


def answer_spans(weights: np.ndarray) -> np.ndarray | None:
    """Each row's first answer target, when every row's answer is one contiguous span.

    Greedy decoding needs a prompt and an answer: the targets marked by ``weights`` must be
    one contiguous run in each row, after at least one prompt token (prompt-then-answer
    tasks; the run may sit at a different offset in every row and padding may follow it).
    Returns None otherwise (for example language modelling, where every token counts).

    Returns:
      int ``[B]``: the index of each row's first answer target.
    """
    weights = np.asarray(weights) > 0
    if not np.all(weights.any(axis=1)):
        return None
    starts = np.argmax(weights, axis=1)
    ends = weights.shape[1] - np.argmax(weights[:, ::-1], axis=1)
    steps = np.arange(weights.shape[1])[None, :]
    span = (steps >= starts[:, None]) & (steps < ends[:, None])
    if np.any(starts == 0) or not np.array_equal(span, weights):
        return None
    return starts


def greedy_metric_sums(
    config: TransformerConfig, params: Any, batch: dict, positions: dict
) -> dict | None:
    """Exact-match and per-token accuracy sums of greedy decoding on one batch.

    Each row's prompt is its inputs up to its first answer target; the model then
    generates the answer token by token from its own predictions (:func:`greedy_fill`),
    with the positions the encoding chose for the whole sequence (``model_positions``:
    the embed positions of a task's answer follow from its prompt, as an addition's
    answer width follows from its operands'). Returns None if a row
    has no contiguous answer after a prompt (see :func:`answer_spans`).
    """
    starts = answer_spans(batch["weights"])
    if starts is None:
        return None
    answer = np.asarray(batch["weights"]) > 0
    last_target = answer.shape[1] - np.argmax(answer[:, ::-1], axis=1)
    generated = greedy_fill(
        config,
        params,
        batch["inputs"],
        positions["positions"],
        jnp.asarray(starts + 1, jnp.int32),
        jnp.asarray(np.max(last_target), jnp.int32),
        embed_positions=positions.get("embed_positions"),
        source=batch.get("source"),
        source_positions=positions.get("source_positions"),
    )
    right = np.asarray(generated == batch["targets"])
    return {
        "greedy_correct_tokens": float(np.sum(right & answer)),
        "greedy_tokens": float(np.sum(answer)),
        "greedy_correct_sequences": float(np.sum(np.all(right | ~answer, axis=1))),
        "greedy_sequences": float(answer.shape[0]),
    }


def evaluate_greedy(spec, params: Any, batches, *, key) -> list[dict] | None:
    """Greedy-decoding accuracy of every seed of stacked ``params`` over ``batches``.

    Positions come from the same keys as teacher-forced evaluation (``evaluate``), so both
    read the same examples at the same positions. Returns None for tasks without a
    contiguous answer after a prompt (see :func:`answer_spans`). Each seed decodes on this
    process's default device, from a whole copy of its parameters (on every process of a
    job of several: they all compute the same numbers).
    """
    params = to_host(params)
    num_seeds = jax.tree.leaves(params)[0].shape[0]
    totals = [None] * num_seeds
    for index, batch in enumerate(batches):
        positions = model_positions(spec.model, batch, jax.random.fold_in(key, index))
        for seed in range(num_seeds):
            seed_params = jax.tree.map(lambda leaf, s=seed: leaf[s], params)
            sums = greedy_metric_sums(spec.model, seed_params, batch, positions)
            if sums is None:
                return None
            previous = totals[seed]
            totals[seed] = sums if previous is None else {k: previous[k] + sums[k] for k in sums}
    return [
        {
            "greedy_token_accuracy": t["greedy_correct_tokens"] / t["greedy_tokens"],
            "greedy_sequence_accuracy": t["greedy_correct_sequences"] / t["greedy_sequences"],
        }
        for t in totals
    ]
