"""Modular arithmetic: evaluate ``x_1 op x_2 op .. x_n`` modulo a small prime."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, leading, separator
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, EQUALS = 0, 1
#: Token of each operator; the ids do not depend on which operators a task uses.
OPERATOR_TOKENS = {"+": 2, "-": 3, "*": 4}
FIRST_NUMBER = 5


@register_task("modular_arithmetic")
@dataclasses.dataclass(frozen=True)
class ModularArithmetic(Task):
    """``x_1 o_1 x_2 .. o_{n-1} x_n = r``: the loss counts only the result ``r``.

    ``x_i`` are residues in ``0 .. modulus - 1`` and ``o_i`` operators drawn uniformly from
    ``operators``; ``r`` is the expression's value modulo ``modulus`` with the usual
    precedence (``*`` before ``+`` and ``-``, left to right otherwise), e.g. modulo 5
    ``1 + 2 * 3 = 2`` and ``1 - 1 - 1 = 4``.

    Tokens: 0 padding, 1 ``=``, 2 ``+``, 3 ``-``, 4 ``*``, ``5 + v`` the residue ``v``
    (operands and result alike). The task length is the number of operands ``n``; the
    expression has ``2n - 1`` tokens (Delétang et al. count those tokens instead and force
    their count to be odd). The decoder reads ``expression =`` (``2n`` tokens) and only
    the last position is scored.

    Attributes:
      modulus: the modulus (5 in Delétang et al.).
      operators: the operators drawn from, a subset of ``("+", "-", "*")``.

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (modular
      arithmetic, a regular task).
    """

    modulus: int = 5
    operators: tuple[str, ...] = ("+", "-", "*")

    def __post_init__(self):
        super().__post_init__()
        if self.modulus < 2:
            raise ValueError(f"modular_arithmetic modulus must be >= 2, got {self.modulus}.")
        unknown = [op for op in self.operators if op not in OPERATOR_TOKENS]
        if not self.operators or unknown or len(set(self.operators)) != len(self.operators):
            raise ValueError(
                f"modular_arithmetic operators must be distinct and taken from "
                f"{tuple(OPERATOR_TOKENS)}; got {self.operators!r}."
            )

    @property
    def vocab_size(self) -> int:
        return FIRST_NUMBER + self.modulus

    def sequence_length(self, length: int) -> int:
        return 2 * length

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        number_key, operator_key = jax.random.split(key)
        numbers = jax.random.randint(number_key, (batch_size, length), 0, self.modulus)
        choice = jax.random.randint(operator_key, (batch_size, length - 1), 0, len(self.operators))
        operators = jnp.asarray([OPERATOR_TOKENS[op] for op in self.operators], jnp.int32)[choice]
        result = _evaluate(numbers, operators, self.modulus, lengths)

        # The expression of the first n operands is the first 2n - 1 tokens.
        expression = jnp.zeros((batch_size, 2 * length - 1), jnp.int32)
        expression = expression.at[:, ::2].set(numbers + FIRST_NUMBER)
        expression = expression.at[:, 1::2].set(operators)
        return decoder_batch(
            [
                (expression, None if lengths is None else 2 * lengths - 1),
                (separator(batch_size, EQUALS), None),
            ],
            [(result[:, None] + FIRST_NUMBER, None)],
        )


def _evaluate(
    numbers: Array, operators: Array, modulus: int, lengths: Array | None = None
) -> Array:
    """Value mod ``modulus`` of ``numbers [B, n]`` joined by operator tokens ``[B, n - 1]``;
    with ``lengths [B]`` row b's expression is its first ``lengths[b]`` operands.

    Reads left to right keeping the finished sum and the running product term (with its
    sign folded in): ``*`` extends the term, ``+``/``-`` close it and open the next one.
    """

    def step(state, xs):
        total, term = state
        operator, number, used = xs
        closes = operator != OPERATOR_TOKENS["*"]
        sign = jnp.where(operator == OPERATOR_TOKENS["-"], modulus - 1, 1)
        new_total = jnp.where(closes, (total + term) % modulus, total)
        new_term = jnp.where(closes, (sign * number) % modulus, (term * number) % modulus)
        return (jnp.where(used, new_total, total), jnp.where(used, new_term, term)), None

    used = leading(None if lengths is None else lengths - 1, operators.shape[1])
    used = jnp.broadcast_to(used, operators.shape)
    start = (jnp.zeros_like(numbers[:, 0]), numbers[:, 0] % modulus)
    (total, term), _ = jax.lax.scan(step, start, (operators.T, numbers[:, 1:].T, used.T))
    return (total + term) % modulus
