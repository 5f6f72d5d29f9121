"""The training loop: several seeds as one vmapped program, async metrics, checkpoints.

The loop dispatches step t + 1 before it reads step t's metrics, so the device never waits
on the host. A NaN or Inf loss stops the run with an error naming the step and the last
checkpoint. With a checkpoint directory, a restarted run resumes from its newest
checkpoint and, because the data of every step is a pure function of (seed, step), ends
with the same parameters as an uninterrupted run.

In a job of several processes (``distributed.join_job``) every process calls ``train``
alike: the run spans every device of the job, each step's metrics are replicated so that
every process reads the same numbers (and stops alike on a NaN), checkpoints are Orbax's
multi-host form, and process 0 alone writes ``metrics.jsonl``.
"""

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from posenc_jax._checks import check_writable_dir, is_integer
from posenc_jax._digest import content_digest
from posenc_jax.train.checkpoint import Checkpointer
from posenc_jax.train.distributed import is_main_process
from posenc_jax.train.sharding import Placement, make_mesh, placement, to_host
from posenc_jax.train.step import RunSpec, TrainState, init_state, over_seeds, train_step


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How a run is driven (not what it learns).

    Attributes:
      log_every: keep the metrics of every this many steps (and the last step).
      checkpoint_every: save a checkpoint every this many steps (0: never).
      start_fresh_if_unusable: when the run's checkpoints exist but none can be restored,
        move them aside and train from step 0 instead of raising
        ``UnusableCheckpointError``.
    """

    log_every: int = 50
    checkpoint_every: int = 0
    start_fresh_if_unusable: bool = False

    def __post_init__(self):
        if self.log_every <= 0:
            raise ValueError(f"log_every must be positive, got {self.log_every}.")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}.")


def run_keys(seeds: Sequence[int], sharding: NamedSharding | None = None) -> jax.Array:
    """A stacked PRNG key per seed, the leading axis of every vmapped quantity, made where
    ``sharding`` places them (None: the default device). Keys are made, not moved, so
    that they can live on devices of other processes."""
    if not seeds:
        raise ValueError("at least one seed is needed.")
    bad = [s for s in seeds if not is_integer(s)]
    bad += [s for s in seeds if s not in bad and not 0 <= s < 2**32]
    if bad:
        raise ValueError(f"seeds must be integers in [0, 2^32), got {bad}.")
    make = jax.vmap(jax.random.key)
    if sharding is not None:
        make = jax.jit(make, out_shardings=sharding)
    return make(np.asarray(seeds, np.uint32))


def run_identity(spec: RunSpec, seeds: Sequence[int]) -> dict:
    """What a run is, for its checkpoints: its seeds and the content digest of its spec
    (every field, arrays such as a corpus by their bytes, encodings by their attributes)."""
    return {"seeds": [int(s) for s in seeds], "spec_sha256": content_digest(spec)}


@functools.lru_cache(maxsize=64)
def compiled_init(spec: RunSpec, place: Placement | None = None) -> Callable:
    shardings = {} if place is None else {"out_shardings": place.state}
    return jax.jit(over_seeds(functools.partial(init_state, spec)), **shardings)


@functools.lru_cache(maxsize=64)
def compiled_step(spec: RunSpec, place: Placement | None = None) -> Callable:
    step = functools.partial(train_step, spec, batch_sharding=place and place.batch)
    shardings = {}
    if place is not None:
        shardings = {
            "in_shardings": (place.state, place.state),
            "out_shardings": (place.state, place.replicated),
        }
    return jax.jit(over_seeds(step), donate_argnums=0, **shardings)


def train(
    spec: RunSpec,
    seeds: Sequence[int],
    *,
    loop: LoopConfig = LoopConfig(),
    workdir: str | None = None,
    on_step: Callable[[int], None] | None = None,
    mesh: Mesh | None = None,
) -> tuple[TrainState, list[dict]]:
    """Trains one model per seed for ``spec.optimizer.total_steps`` steps, all in one program.

    Args:
      spec: model, task, length, batch size and optimizer.
      seeds: one run per seed; states and metrics carry a leading seed axis.
      loop: logging and checkpointing cadence.
      workdir: where checkpoints and ``metrics.jsonl`` go; None keeps nothing on disk.
      on_step: called with the number of steps done after each step (progress bars).
      mesh: devices to train on (``sharding.make_mesh()``); seeds or batch are split over
        them. None: the default device, or in a job of several processes every device of
        the job.

    Returns:
      The final stacked TrainState and the logged metrics, one dict per logged step with
      per-seed lists.

    Raises:
      FloatingPointError: the loss became NaN or Inf; the message names the step, the seed
        and the last checkpoint.
      UnusableCheckpointError: checkpoints exist but none can be restored (see
        ``LoopConfig.start_fresh_if_unusable``).
      ValueError: ``workdir`` cannot be created or written.
    """
    if workdir is not None:
        workdir = check_writable_dir(workdir)
    if mesh is None and jax.process_count() > 1:
        mesh = make_mesh()
    place = (
        None if mesh is None else placement(mesh, num_seeds=len(seeds), batch_size=spec.batch_size)
    )
    keys = run_keys(seeds, place and place.state)
    state = compiled_init(spec, place)(keys)
    checkpointer = None
    if workdir is not None and loop.checkpoint_every:
        checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"),
            every=loop.checkpoint_every,
            run=run_identity(spec, seeds),
        )
        restored = checkpointer.restore(state, start_fresh_if_unusable=loop.start_fresh_if_unusable)
        if restored is not None:
            state = restored  # placed as the template, ``state``
    start = int(to_host(state.step).reshape(-1)[0])
    log_path = os.path.join(workdir, "metrics.jsonl") if workdir else None
    history = _read_history(log_path, before_step=start)

    total = spec.optimizer.total_steps
    step_fn = compiled_step(spec, place)
    pending = None
    last_saved = checkpointer.latest_step() if checkpointer else None
    try:
        for step in range(start, total):
            state, metrics = step_fn(state, keys)
            if pending is not None:
                _record(pending, seeds, loop, total, history, last_saved)
            pending = (step + 1, metrics)
            if checkpointer and checkpointer.is_due(step + 1, final=step + 1 == total):
                # The metrics log and the checkpoint move together, so a resumed run
                # neither repeats nor misses a logged step.
                _record(pending, seeds, loop, total, history, last_saved)
                pending = None
                # Log before checkpoint: a run killed between the two resumes from the
                # older checkpoint and drops the extra rows; the other order would lose rows.
                _write_history(log_path, history)
                checkpointer.save(step + 1, state)
                last_saved = step + 1
            if on_step:
                on_step(step + 1)
        if pending is not None:
            _record(pending, seeds, loop, total, history, last_saved)
    finally:
        if checkpointer:
            checkpointer.close()
    if log_path:
        _write_history(log_path, history)
    return state, history


def _record(pending, seeds, loop, total, history, last_saved) -> None:
    """Reads one step's metrics (already computed), checks them, keeps them if due."""
    step, metrics = pending
    metrics = to_host(metrics)
    losses = metrics["loss"]
    bad = [(seed, float(v)) for seed, v in zip(seeds, losses, strict=True) if not math.isfinite(v)]
    if bad:
        seed, value = bad[0]
        where = f"step {last_saved}" if last_saved is not None else "none (no checkpoint saved)"
        raise FloatingPointError(
            f"training loss is {value} at step {step} (seed {seed}); last good checkpoint: "
            f"{where}. Lower the learning rate or check the inputs."
        )
    if step % loop.log_every == 0 or step == total:
        history.append({"step": step, **{k: v.tolist() for k, v in metrics.items()}})


def _read_history(path: str | None, *, before_step: int) -> list[dict]:
    """Logged rows of earlier attempts of this run, up to the step it resumes from."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [row for row in rows if row["step"] <= before_step]


def _write_history(path: str, history: list[dict]) -> None:
    if not is_main_process():
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
