"""Training: optimizer, jit-compiled step, vmapped seeds, checkpoints, evaluation, and the
multi-host job they run in."""

from posenc_jax.train.checkpoint import Checkpointer
from posenc_jax.train.distributed import join_job
from posenc_jax.train.evaluate import evaluate, generated_batches
from posenc_jax.train.lm_eval import evaluate_lm, evaluate_lm_runs, lm_windows
from posenc_jax.train.loop import LoopConfig, run_keys, train
from posenc_jax.train.metrics import masked_metrics
from posenc_jax.train.optimizer import OptimizerConfig, make_optimizer
from posenc_jax.train.step import RunSpec, TrainState, forward, init_state, train_step

__all__ = [
    "Checkpointer",
    "LoopConfig",
    "OptimizerConfig",
    "RunSpec",
    "TrainState",
    "evaluate",
    "evaluate_lm",
    "evaluate_lm_runs",
    "forward",
    "generated_batches",
    "init_state",
    "join_job",
    "lm_windows",
    "make_optimizer",
    "masked_metrics",
    "run_keys",
    "train",
    "train_step",
]
