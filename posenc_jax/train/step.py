"""One jit-compiled training step and the evaluation of a batch, as pure functions.

The data of step t is a pure function of (run key, t): the task samples its batch and the
encoding chooses its positions (``sample_positions``) from keys folded with the step
number. A run restored from a checkpoint therefore sees exactly the batches it would have
seen, and ``jax.vmap`` over run keys trains several seeds as one program.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from posenc_jax.data.task import Batch, Task
from posenc_jax.models.transformer import Transformer, TransformerConfig
from posenc_jax.train.metrics import masked_metrics
from posenc_jax.train.optimizer import OptimizerConfig, make_optimizer
from posenc_jax.typing import Array


@flax.struct.dataclass
class TrainState:
    """Everything a run needs to continue: step counter, parameters, optimizer state."""

    step: Array
    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What one training run is: model, task, train lengths, batch size, optimizer.

    Attributes:
      model: the Transformer.
      task: the task.
      train_length: N, the longest training length (in the task's units).
      batch_size: examples per step.
      optimizer: the optimizer's settings.
      min_train_length: None (every example at length N) or the shortest training length:
        each example of every batch then draws its length uniformly from
        ``[min_train_length, N]`` and is padded to the width of N (Delétang et al. 2023;
        Ruoss et al. 2023; Kazemnejad et al. 2023).
    """

    model: TransformerConfig
    task: Task
    train_length: int
    batch_size: int
    optimizer: OptimizerConfig
    min_train_length: int | None = None

    def __post_init__(self):
        self.task.check_size(self.batch_size, self.train_length)
        if self.min_train_length is not None:
            self.task.check_min_length(self.min_train_length, self.train_length)
        if self.model.architecture != self.task.architecture:
            raise ValueError(
                f"task {self.task.name!r} is posed for a {self.task.architecture!r} model, "
                f"but the model is {self.model.architecture!r}."
            )
        if self.model.vocab_size < self.task.vocab_size:
            raise ValueError(
                f"model vocab_size={self.model.vocab_size} is smaller than the task's "
                f"{self.task.vocab_size}."
            )


#: Folded into the positions key to draw the embed positions' offsets.
_EMBED_POSITIONS_STREAM = 0xAB


def _keys(run_key: Array, step: Array) -> tuple[Array, Array, Array]:
    data_key, positions_key, source_key = jax.random.split(jax.random.fold_in(run_key, step), 3)
    return data_key, positions_key, source_key


def model_positions(
    model: TransformerConfig, batch: Batch, key: Array, *, training: bool = False
) -> dict[str, Array]:
    """The position arrays of a batch, chosen by the model's encoding: the one place that
    decides positions.

    ``positions`` (and ``source_positions``) come from ``sample_positions``, for each
    example's own length when the batch is padded; ``embed_positions``, when the encoding
    has its own (``embed_positions``: Abacus, position coupling), from the positions the
    task assigns (``batch["task_positions"]``), with the offsets it draws in training.

    Args:
      model: the model's configuration.
      batch: a batch in the task layout.
      key: a PRNG key.
      training: whether the batch is a training batch.

    Returns:
      ``positions`` ``[B, T]``, and ``embed_positions`` ``[B, T]`` and
      ``source_positions`` ``[B, S]`` where they apply.
    """
    target_key, source_key = jax.random.split(key)
    # Folded in, so the other positions are those drawn before embed positions existed.
    embed_key = jax.random.fold_in(key, _EMBED_POSITIONS_STREAM)

    def sample(key, tokens, padding_mask):
        lengths = None if padding_mask is None else jnp.sum(padding_mask, axis=-1)
        return model.encoding.sample_positions(key, *tokens.shape, lengths=lengths)

    positions = {"positions": sample(target_key, batch["inputs"], batch.get("padding_mask"))}
    embed_positions = model.encoding.embed_positions(
        embed_key, batch.get("task_positions"), training=training
    )
    if embed_positions is not None:
        positions["embed_positions"] = embed_positions
    if "source" in batch:
        positions["source_positions"] = sample(
            source_key, batch["source"], batch.get("source_padding_mask")
        )
    return positions


def forward(model: TransformerConfig, params: Any, batch: Batch, positions: dict) -> Array:
    """Logits ``[B, T, V]`` of the model on a batch (padding masked when it has any)."""
    return Transformer(model).apply(
        {"params": params},
        batch["inputs"],
        positions["positions"],
        padding_mask=batch.get("padding_mask"),
        embed_positions=positions.get("embed_positions"),
        source=batch.get("source"),
        source_positions=positions.get("source_positions"),
        source_padding_mask=batch.get("source_padding_mask"),
    )


def sample_train_batch(spec: RunSpec, key: Array, batch_size: int) -> Batch:
    """A training batch: at length N, or at lengths drawn from ``[min_train_length, N]``."""
    if spec.min_train_length is None:
        return spec.task.sample(key, batch_size, spec.train_length)
    return spec.task.sample(key, batch_size, spec.train_length, min_length=spec.min_train_length)


def init_state(spec: RunSpec, run_key: Array) -> TrainState:
    """Initial parameters and optimizer state of one run."""
    init_key, data_key = jax.random.split(run_key)
    batch = spec.task.sample(data_key, 1, spec.train_length)
    positions = model_positions(spec.model, batch, data_key)
    params = Transformer(spec.model).init(
        init_key,
        batch["inputs"],
        positions["positions"],
        embed_positions=positions.get("embed_positions"),
        source=batch.get("source"),
        source_positions=positions.get("source_positions"),
    )["params"]
    opt_state = make_optimizer(spec.optimizer).init(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state)


def over_seeds(fn: Callable, in_axes: int | tuple = 0) -> Callable:
    """``jax.vmap(fn, in_axes)`` over a leading seed axis.

    A single seed (the mapped arguments' leading axis has size 1) runs unbatched and gets
    its seed axis back: XLA on CPU runs the batched matrix products that vmap makes, even
    with a batch of one, about 30% slower than the plain ones
    (``experiments/benchmarks/NOTES.md``).

    Args:
      fn: the per-seed function.
      in_axes: 0 (every argument has the seed axis) or, per argument, 0 or None.
    """
    batched = jax.vmap(fn, in_axes=in_axes)

    def run(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        num_seeds = next(
            jax.tree.leaves(a)[0].shape[0] for a, ax in zip(args, axes, strict=True) if ax == 0
        )
        if num_seeds != 1:
            return batched(*args)
        one = fn(
            *(
                jax.tree.map(lambda x: x[0], a) if ax == 0 else a
                for a, ax in zip(args, axes, strict=True)
            )
        )
        return jax.tree.map(lambda x: x[None], one)

    return run


def train_step(
    spec: RunSpec, state: TrainState, run_key: Array, *, batch_sharding=None
) -> tuple[TrainState, dict]:
    """One optimizer step on the batch of step ``state.step`` of the run ``run_key``.

    ``batch_sharding`` (a NamedSharding) splits the batch over devices; the gradient is
    then reduced across them by XLA.
    """
    data_key, positions_key, _ = _keys(run_key, state.step)
    batch = sample_train_batch(spec, data_key, spec.batch_size)
    if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    positions = model_positions(spec.model, batch, positions_key, training=True)

    def loss_fn(params):
        metrics = masked_metrics(
            forward(spec.model, params, batch, positions), batch["targets"], batch["weights"]
        )
        return metrics["loss"], metrics

    grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = make_optimizer(spec.optimizer).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {**metrics, "grad_norm": optax.global_norm(grads)}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_batch(spec: RunSpec, params: Any, batch: Batch, positions_key: Array) -> dict:
    """Teacher-forced metric sums of a batch (pool them with ``metrics.ratios``)."""
    positions = model_positions(spec.model, batch, positions_key)
    metrics = masked_metrics(
        forward(spec.model, params, batch, positions), batch["targets"], batch["weights"]
    )
    return {
        k: metrics[k]
        for k in ("loss_sum", "correct_tokens", "tokens", "correct_sequences", "sequences")
    }
