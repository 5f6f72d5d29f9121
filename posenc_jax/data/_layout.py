"""The decoder layout shared by the prompt-then-answer tasks."""

import jax.numpy as jnp

from posenc_jax.data.task import Batch
from posenc_jax.typing import Array


def prompt_answer_batch(prompt: Array, answer: Array) -> Batch:
    """Teacher-forced decoder batch of ``prompt answer`` with the loss on the answer only.

    The decoder reads ``prompt answer[:-1]`` and predicts the next token everywhere; the
    weights select the positions whose target is an answer token, i.e. from the last prompt
    token on. This is the copy task's layout, shared so every task counts the same tokens.

    Args:
      prompt: int32 ``[B, P]``; its last token is the separator the answer follows.
      answer: int32 ``[B, A]``.

    Returns:
      ``inputs``, ``targets`` int32 and ``weights`` float32, each ``[B, P + A - 1]``.
    """
    batch_size, prompt_length = prompt.shape
    sequence = jnp.concatenate([prompt, answer], axis=1).astype(jnp.int32)
    length = sequence.shape[1] - 1
    weights = (jnp.arange(length) >= prompt_length - 1).astype(jnp.float32)
    return {
        "inputs": sequence[:, :-1],
        "targets": sequence[:, 1:],
        "weights": jnp.broadcast_to(weights, (batch_size, length)),
    }
