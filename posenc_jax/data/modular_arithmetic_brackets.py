"""Modular arithmetic with brackets: evaluate a bracketed expression modulo a small number."""

import dataclasses

import jax
import jax.numpy as jnp

from posenc_jax.data._layout import decoder_batch, separator
from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD, EQUALS, PLUS, MINUS, TIMES, OPEN, CLOSE = 0, 1, 2, 3, 4, 5, 6
FIRST_NUMBER = 7

# The generator's states (what the next token may be) and its token kinds.
_OPERAND, _OPERATOR, _NEGATED = 0, 1, 2
_NUMBER, _UNARY_MINUS, _OPEN, _BINARY, _CLOSE = 0, 1, 2, 3, 4
#: Relative odds of each kind where several keep the expression completable.
_KIND_WEIGHTS = (2.0, 1.0, 2.0, 3.0, 2.0)


@register_task("modular_arithmetic_brackets")
@dataclasses.dataclass(frozen=True)
class ModularArithmeticBrackets(Task):
    """An expression of exactly n tokens with brackets, ``=``, then its value mod m.

    The grammar is the usual one: an operand is a number, a negated number ``-x`` or a
    bracketed expression; operands are joined by binary ``+`` and ``-`` (and ``*`` with
    ``multiplication``, before ``+`` and ``-``). Delétang et al. build expressions by
    recursive splitting in Python; here the tokens are drawn left to right under jit, each
    from the kinds that can still be completed to exactly n tokens with every bracket
    closed, so any n >= 1 works and the examples are a pure function of the key. The
    value is computed with a stack of partial sums, one per open bracket.

    Tokens: 0 padding, 1 ``=``, 2 ``+``, 3 ``-`` (binary or unary), 4 ``*``, 5 ``(``,
    6 ``)``, ``7 + v`` the residue v. The decoder reads ``expression =`` (``n + 1``
    tokens) and only the last position is scored.

    Attributes:
      modulus: m (5 in Delétang et al.).
      multiplication: also draw ``*`` (off in Delétang et al.'s default).

    References:
      Delétang et al., "Neural Networks and the Chomsky Hierarchy", ICLR 2023 (modular
      arithmetic with brackets, a deterministic context-free task).
    """

    modulus: int = 5
    multiplication: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.modulus < 2:
            raise ValueError(
                f"modular_arithmetic_brackets modulus must be >= 2, got {self.modulus}."
            )

    @property
    def vocab_size(self) -> int:
        return FIRST_NUMBER + self.modulus

    def sequence_length(self, length: int) -> int:
        return length + 1

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        n = jnp.full((batch_size,), length, jnp.int32) if lengths is None else lengths
        expression = self._expression(key, batch_size, length, n)
        value = evaluate_brackets(expression, n, self.modulus)
        return decoder_batch(
            [(expression, lengths), (separator(batch_size, EQUALS), None)],
            [(value[:, None] + FIRST_NUMBER, None)],
        )

    def _expression(self, key: Array, batch_size: int, width: int, n: Array) -> Array:
        """Tokens ``[B, width]``: row b an expression of exactly ``n[b]`` tokens."""
        operators = jnp.asarray([PLUS, MINUS] + ([TIMES] if self.multiplication else []))
        log_weights = jnp.log(jnp.asarray(_KIND_WEIGHTS, jnp.float32))

        def closable(depth, remaining):
            # After an operand at `depth`, `remaining` tokens can close it: every bracket
            # closed exactly (remaining == depth) or at least one more "op operand".
            return (remaining == depth) | (remaining >= depth + 2)

        def step(state, xs):
            mode, depth = state
            t, step_key = xs
            remaining = n - t  # tokens still to write, this one included
            after = remaining - 1
            feasible = jnp.stack(
                [
                    (mode != _OPERATOR) & closable(depth, after),
                    (mode == _OPERAND) & (after >= 1) & closable(depth, after - 1),
                    (mode == _OPERAND) & (after >= depth + 2),
                    (mode == _OPERATOR) & (after >= depth + 1),
                    (mode == _OPERATOR) & (depth > 0) & closable(depth - 1, after),
                ],
                axis=-1,
            )
            kind_key, number_key, operator_key = jax.random.split(step_key, 3)
            noise = jax.random.gumbel(kind_key, (batch_size, len(_KIND_WEIGHTS)))
            kind = jnp.argmax(jnp.where(feasible, log_weights[None, :] + noise, -jnp.inf), axis=-1)
            number = jax.random.randint(number_key, (batch_size,), 0, self.modulus)
            operator = operators[jax.random.randint(operator_key, (batch_size,), 0, len(operators))]
            token = jnp.select(
                [kind == _NUMBER, kind == _UNARY_MINUS, kind == _OPEN, kind == _BINARY],
                [number + FIRST_NUMBER, MINUS, OPEN, operator],
                CLOSE,
            )
            new_mode = jnp.select(
                [kind == _UNARY_MINUS, (kind == _OPEN) | (kind == _BINARY)],
                [_NEGATED, _OPERAND],
                _OPERATOR,
            )
            new_depth = depth + (kind == _OPEN) - (kind == _CLOSE)
            writing = remaining > 0
            token = jnp.where(writing, token, PAD)
            state = (jnp.where(writing, new_mode, mode), jnp.where(writing, new_depth, depth))
            return state, token

        init = (jnp.full((batch_size,), _OPERAND), jnp.zeros((batch_size,), jnp.int32))
        xs = (jnp.arange(width), jax.random.split(key, width))
        _, tokens = jax.lax.scan(step, init, xs)
        return tokens.T.astype(jnp.int32)


def evaluate_brackets(expression: Array, lengths: Array, modulus: int) -> Array:
    """Value mod ``modulus`` of each row's first ``lengths`` tokens, int32 ``[B]``.

    Each open bracket level keeps the finished sum, the running product term, the binary
    operator waiting for the next operand and a pending unary minus; ``)`` hands its
    level's value to the level below as an operand.
    """
    batch_size, width = expression.shape
    rows = jnp.arange(batch_size)
    levels = width + 1

    def apply(total, term, operator, value):
        """Combines an operand into a level (``*`` before ``+``/``-``)."""
        times = operator == TIMES
        closed = jnp.where(times, total, (total + term) % modulus)
        signed = jnp.where(operator == MINUS, -value, value)
        return closed, jnp.where(times, (term * value) % modulus, signed % modulus)

    def step(state, xs):
        totals, terms, operators, negated, depth, expecting_operand = state
        token, active = xs
        is_number = token >= FIRST_NUMBER
        unary = expecting_operand & (token == MINUS)
        binary = ~expecting_operand & ((token == PLUS) | (token == MINUS) | (token == TIMES))
        opens, closes = token == OPEN, token == CLOSE

        # The operand this token completes (a number, or a closed level's value).
        closed_value = (totals[rows, depth] + terms[rows, depth]) % modulus
        target = jnp.where(closes, depth - 1, depth)
        value = jnp.where(closes, closed_value, token - FIRST_NUMBER)
        value = jnp.where(negated[rows, target], -value, value) % modulus
        total, term = apply(
            totals[rows, target], terms[rows, target], operators[rows, target], value
        )
        completes = active & (is_number | closes)

        def put(array, where, index, new):
            return array.at[rows, index].set(jnp.where(where, new, array[rows, index]))

        totals = put(totals, completes, target, total)
        terms = put(terms, completes, target, term)
        negated = put(negated, completes, target, False)
        operators = put(operators, active & binary, depth, token)
        negated = put(negated, active & unary, depth, True)
        # A new level starts empty: nothing summed, waiting as if after "+".
        child = jnp.minimum(depth + 1, levels - 1)
        totals = put(totals, active & opens, child, 0)
        terms = put(terms, active & opens, child, 0)
        operators = put(operators, active & opens, child, PLUS)
        negated = put(negated, active & opens, child, False)
        depth = depth + (active & opens) - (active & closes)
        expecting_operand = jnp.where(active, opens | unary | binary, expecting_operand)
        return (totals, terms, operators, negated, depth, expecting_operand), None

    zeros = jnp.zeros((batch_size, levels), jnp.int32)
    init = (
        zeros,
        zeros,
        jnp.full((batch_size, levels), PLUS, jnp.int32),
        jnp.zeros((batch_size, levels), jnp.bool_),
        jnp.zeros((batch_size,), jnp.int32),
        jnp.ones((batch_size,), jnp.bool_),
    )
    active = jnp.arange(width)[None, :] < lengths[:, None]
    (totals, terms, *_), _ = jax.lax.scan(step, init, (expression.T, active.T))
    return (totals[:, 0] + terms[:, 0]) % modulus
