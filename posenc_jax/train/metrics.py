"""Loss and accuracy over the target tokens a task marks with ``weights``."""

import jax.numpy as jnp
import optax

from posenc_jax.typing import Array


def masked_metrics(logits: Array, targets: Array, weights: Array) -> dict[str, Array]:
    """Cross-entropy and accuracies over weighted targets.

    Args:
      logits: ``[B, T, V]``.
      targets: int ``[B, T]``.
      weights: ``[B, T]``; 1 where the target counts.

    Returns:
      ``loss`` (mean cross-entropy per counted token), ``token_accuracy`` (fraction of
      counted tokens predicted right by argmax) and ``sequence_accuracy`` (fraction of
      examples whose every counted token is right: exact match), plus the sums they come
      from (``loss_sum``, ``correct_tokens``, ``tokens``, ``correct_sequences``,
      ``sequences``), so results over many batches can be pooled exactly.
    """
    weights = weights.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    tokens = jnp.sum(weights)
    has_targets = jnp.sum(weights, axis=-1) > 0
    sequence_correct = jnp.all((correct > 0) | (weights == 0), axis=-1) & has_targets
    sums = {
        "loss_sum": jnp.sum(losses * weights),
        "correct_tokens": jnp.sum(correct * weights),
        "tokens": tokens,
        "correct_sequences": jnp.sum(sequence_correct.astype(jnp.float32)),
        "sequences": jnp.sum(has_targets.astype(jnp.float32)),
    }
    return {**sums, **ratios(sums)}


def ratios(sums: dict[str, Array]) -> dict[str, Array]:
    """Loss and accuracies from pooled sums; a pool with no counted token is an error upstream."""
    tokens = jnp.maximum(sums["tokens"], 1.0)
    return {
        "loss": sums["loss_sum"] / tokens,
        "token_accuracy": sums["correct_tokens"] / tokens,
        "sequence_accuracy": sums["correct_sequences"] / jnp.maximum(sums["sequences"], 1.0),
    }
