"""Positions chosen for the task: learned tables indexed by each digit's place (arithmetic).

Abacus embeddings and position coupling add a learned vector to each token's embedding,
as a learned absolute table does, but index it by the positions the *task* assigns
(``task_positions``, e.g. :class:`~posenc_jax.data.addition.Addition`'s digit places)
instead of the token's place in the sequence. Both are therefore a choice of positions for
the ``embed`` hook (:meth:`~posenc_jax.encodings.PositionalEncoding.embed_positions`): the
model still orders tokens by its own positions (causality, cache, attention), and
``posenc_jax.train.step.model_positions`` draws the training-only offsets.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from posenc_jax import functional
from posenc_jax._checks import check_positions_below, check_positive_int, is_integer
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.parameters import Dims, Parameter, Specs
from posenc_jax.encodings.registry import register
from posenc_jax.typing import Array


class _TaskPositionTable(PositionalEncoding):
    """A learned table of ``max_position + 1`` vectors added to the embeddings at the
    positions :meth:`embed_positions` chooses from the task's."""

    needs_task_positions = True

    max_position: int = 1023
    stddev: float = 0.02

    def embed_parameters(self, dims: Dims) -> Specs:
        check_positive_int(self.max_position, f"{self.registry_name} max_position")
        init = nn.initializers.normal(self.stddev)
        return {"table": Parameter((self.max_position + 1, dims.d_model), init)}

    def embed_with(self, params, x: Array, positions: Array, *, context=None) -> Array:
        check_positions_below(positions, self.max_position + 1, f"{self.registry_name} table")
        return x + jnp.take(params["table"], positions, axis=0).astype(x.dtype)

    def _given(self, task_positions: Array | None) -> Array:
        """The task's positions; an error naming what is missing when there are none."""
        if task_positions is None:
            raise ValueError(
                f"{self.registry_name} indexes its table by the positions the task assigns "
                "(batch['task_positions']), and this batch has none; use a task that "
                "assigns them (addition)."
            )
        return jnp.asarray(task_positions, jnp.int32)


@register("abacus")
class Abacus(_TaskPositionTable):
    """Abacus embeddings: a learned vector per digit place, shifted by a random offset in training.

    Each digit's id is its 1-based place in its own number, counted from the least
    significant digit (numbers are written least significant first), and every other
    token's id is 0: ``id = place + k`` on digits, 0 elsewhere. In training one offset
    ``k ~ U{0, ..., max_offset}`` is drawn per batch (the official code's
    ``random.randint(0, max_k)`` per forward pass), so the vectors of places beyond the
    training lengths are trained too; at evaluation ``k = 0``. The vector ``table[id]`` is
    added to the token embedding. The task must assign the places
    (``batch['task_positions']``, e.g. the ``addition`` task); the attention layers see
    the model's positions (NoPE here: only the causal mask orders tokens).

    Attributes:
      max_offset: ``k_max`` (100 in the paper's configurations; the official code's
        ``max_k`` is inclusive).
      max_position: the largest id, so the table has ``max_position + 1`` rows (1024 in
        the official code); training ids reach the longest training number's places +
        ``max_offset``.
      stddev: the table's initial standard deviation.

    References:
      McLeish, Bansal, Stein, Jain, Kirchenbauer, Bartoldson, Kailkhura, Bhatele, Geiping,
      Schwarzschild, Goldstein, "Transformers Can Do Arithmetic with the Right
      Embeddings", NeurIPS 2024, arXiv 2405.17399 (code: mcleish7/arithmetic, abacus.py).
    """

    max_offset: int = 100

    @nn.nowrap
    def embed_positions(self, key: Array, task_positions: Array | None, *, training: bool):
        places = self._given(task_positions)
        if not is_integer(self.max_offset) or self.max_offset < 0:
            raise ValueError(f"abacus max_offset must be an integer >= 0, got {self.max_offset!r}.")
        offset = jax.random.randint(key, (), 0, self.max_offset + 1) if training else 0
        return functional.abacus_positions(places, offset)


@register("position_coupling")
class PositionCoupling(_TaskPositionTable):
    """Position coupling: digits of equal significance share one learned position id.

    Every digit of significance ``i`` (0-based, in both operands and in the answer) gets
    the id ``start + 1 + i``, and the other tokens (``+``, ``=``) the id ``start``:
    ``id = start + place`` for the task's places (0 off the digits). In training each
    example draws ``start ~ U{1, ..., max_position - P}``, ``P`` its largest place, so
    that its ids fill ``[1, max_position]``; at evaluation ``start = 1``. The vector
    ``table[id]`` is added to the token embedding (the paper's learned absolute
    embedding); the attention layers see the model's positions. The task must assign
    the places (``batch['task_positions']``, e.g. the ``addition`` task).

    Attributes:
      max_position: the largest id (the table has ``max_position + 1`` rows); 150 in the
        paper's addition runs (trained on 1..30 digits, tested up to 100). The answer of
        the longest evaluated problem must fit: its largest place + 1 <= max_position.
      stddev: the table's initial standard deviation.

    References:
      Cho, Cha, Awasthi, Bhojanapalli, Gupta, Yun, "Position Coupling: Improving Length
      Generalization of Arithmetic Transformers Using Task Structure", NeurIPS 2024,
      arXiv 2405.20671 (code: HanseulJo/position-coupling, src/data/addition.py).
    """

    max_position: int = 150

    @nn.nowrap
    def embed_positions(self, key: Array, task_positions: Array | None, *, training: bool):
        places = self._given(task_positions)
        # The start id is at least 1: a place must leave room for it below max_position.
        check_positions_below(
            places,
            self.max_position,
            f"position_coupling (max_position={self.max_position}, ids from start 1 on)",
        )
        if not training:
            return functional.coupled_positions(places, 1)
        largest = jnp.max(places, axis=-1)
        start = jax.random.randint(key, largest.shape, 1, self.max_position - largest + 1)
        return functional.coupled_positions(places, start[..., None])
