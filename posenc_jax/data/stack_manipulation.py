"""Stack manipulation: run POP / PUSH instructions on a given stack, write the result."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, separator
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, SEPARATOR, ZERO, ONE, POP, PUSH_ZERO, PUSH_ONE, END = 0, 1, 2, 3, 4, 5, 6, 7


@register_task("stack_manipulation")
@dataclasses.dataclass(frozen=True)
class StackManipulation(Task):
    """``stack actions SEP final_stack END``: the loss counts the final stack and END.

    An example of length n is a stack of s bits written bottom to top (s uniform in
    ``1 .. n - 1``; s = 1 at n = 1) followed by ``n - s`` actions drawn uniformly from POP,
    PUSH 0 and PUSH 1. A POP on an empty stack does nothing. The answer is the final stack
    read top to bottom (as if popped), then END: between 1 and ``n + 1`` tokens, so the
    answer's length differs between examples of one length and every batch carries a
    ``padding_mask``.

    Tokens: 0 padding, 1 separator, 2 bit zero, 3 bit one, 4 POP, 5 PUSH 0, 6 PUSH 1,
    7 END. The decoder reads ``stack actions SEP answer[:-1]``.

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (stack
      manipulation, a deterministic context-free task; its output also ends with a
      termination token).
    """

    @property
    def vocab_size(self) -> int:
        return END + 1

    def sequence_length(self, length: int) -> int:
        # n tokens, the separator, and up to n + 1 answer tokens less the last one.
        return 2 * length + 1

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        stack_key, bits_key, actions_key = jax.random.split(key, 3)
        n = jnp.full((batch_size,), length, jnp.int32) if lengths is None else lengths
        stack_size = jax.random.randint(stack_key, (batch_size,), 1, jnp.maximum(n, 2))
        bits = jax.random.randint(bits_key, (batch_size, length), ZERO, ONE + 1, jnp.int32)
        actions = jax.random.randint(
            actions_key, (batch_size, length), POP, PUSH_ONE + 1, jnp.int32
        )
        steps = jnp.arange(length)[None, :]
        program = jnp.where(steps < stack_size[:, None], bits, actions)
        final, size = run_stack(program, n)
        # Top to bottom, then END.
        answer_steps = jnp.arange(length + 1)[None, :]
        top_down = jnp.take_along_axis(
            final, jnp.clip(size[:, None] - 1 - answer_steps, 0, length - 1), axis=1
        )
        answer = jnp.where(answer_steps < size[:, None], top_down, END)
        return decoder_batch(
            [(program, lengths), (separator(batch_size, SEPARATOR), None)],
            [(answer, size + 1)],
        )


def run_stack(program: Array, lengths: Array) -> tuple[Array, Array]:
    """Runs each row's first ``lengths`` tokens: a bit is pushed (the given stack), POP
    pops (nothing when empty), PUSH 0 / PUSH 1 push that bit.

    Returns:
      ``(stack [B, W] bit tokens bottom to top, size [B])``; entries at or above a row's
      size are stale.
    """
    batch_size, width = program.shape
    rows = jnp.arange(batch_size)

    def step(state, xs):
        stack, size = state
        token, active = xs
        pushed = jnp.where(token == PUSH_ZERO, ZERO, jnp.where(token == PUSH_ONE, ONE, token))
        pushes = active & (token != POP)
        pops = active & (token == POP)
        stack = stack.at[rows, jnp.minimum(size, width - 1)].set(
            jnp.where(pushes, pushed, stack[rows, jnp.minimum(size, width - 1)])
        )
        size = size + pushes - (pops & (size > 0))
        return (stack, size), None

    active = jnp.arange(width)[None, :] < lengths[:, None]
    init = (jnp.zeros((batch_size, width), jnp.int32), jnp.zeros((batch_size,), jnp.int32))
    (stack, size), _ = jax.lax.scan(step, init, (program.T, active.T))
    return stack, size
