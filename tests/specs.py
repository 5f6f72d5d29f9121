"""The small runs the tests share: a tiny training spec and the smoke study command."""

import sys

import posenc_jax as pj
from posenc_jax.data import get_task
from posenc_jax.train import OptimizerConfig, RunSpec


def tiny_copy_spec(
    *,
    encoding="sinusoidal",
    train_length=4,
    batch_size=8,
    total_steps=6,
    learning_rate=3e-3,
    warmup_steps=1,
) -> RunSpec:
    """A one-layer Transformer on the copy task, seconds to train on a CPU.

    ``encoding`` is a registered name or an encoding module.
    """
    return RunSpec(
        model=pj.models.TransformerConfig(
            vocab_size=10,
            d_model=16,
            num_layers=1,
            num_heads=2,
            mlp_dim=32,
            encoding=pj.encodings.get(encoding) if isinstance(encoding, str) else encoding,
        ),
        task=get_task("copy"),
        train_length=train_length,
        batch_size=batch_size,
        optimizer=OptimizerConfig(
            learning_rate=learning_rate, total_steps=total_steps, warmup_steps=warmup_steps
        ),
    )


def smoke_study_command(workdir, *overrides: str) -> list[str]:
    """The study CLI on the smoke preset, writing into ``workdir`` (run from the repo root)."""
    return [
        sys.executable,
        "-m",
        "experiments.length_extrapolation",
        "--config",
        "experiments/configs/smoke.py",
        "--workdir",
        str(workdir),
        *overrides,
    ]


#: The wall-clock times of a study row: the fields two runs of one cell never share.
ROW_TIMES = ("train_seconds", "steps_seconds", "eval_seconds")
