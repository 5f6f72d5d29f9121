"""Training: metrics, vmapped seeds, NaN guard, checkpoint resume."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.train import LoopConfig, OptimizerConfig, masked_metrics, train
from posenc_jax.train.checkpoint import (
    Checkpointer,
    CheckpointLayoutError,
    CheckpointOfAnotherRunError,
)
from posenc_jax.train.loop import compiled_init, run_keys
from tests.specs import tiny_copy_spec

_spec = tiny_copy_spec


def test_masked_metrics_against_numpy(rng):
    logits = rng.standard_normal((3, 4, 5)).astype(np.float32)
    targets = rng.integers(0, 5, (3, 4))
    targets[0] = logits[0].argmax(-1)  # example 0 entirely right
    weights = np.array([[0, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], np.float32)
    got = masked_metrics(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    correct = logits.argmax(-1) == targets
    np.testing.assert_allclose(got["loss"], (nll * weights).sum() / weights.sum(), rtol=1e-5)
    np.testing.assert_allclose(got["token_accuracy"], (correct * weights).sum() / weights.sum())
    exact = [bool(np.all(correct[b][weights[b] > 0])) for b in range(2)]  # example 2 counts nothing
    np.testing.assert_allclose(got["sequence_accuracy"], np.mean(exact))
    assert float(got["sequences"]) == 2


def test_vmapped_seeds_equal_separate_runs():
    spec = _spec()
    together, _ = train(spec, [3, 7])
    for index, seed in enumerate([3, 7]):
        alone, _ = train(spec, [seed])
        jax.tree.map(
            lambda a, b, i=index: np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6),
            together.params,
            alone.params,
        )


def test_nan_loss_stops_with_the_step():
    with pytest.raises(FloatingPointError, match=r"at step \d+ \(seed 0\); last good checkpoint"):
        train(_spec(total_steps=30, learning_rate=1e30), [0])


def test_resume_after_interruption_is_exact(tmp_path):
    spec = _spec(total_steps=6)
    loop = LoopConfig(log_every=1, checkpoint_every=2)
    reference, reference_history = train(spec, [0], loop=loop, workdir=str(tmp_path / "reference"))

    class Interrupt(Exception):
        pass

    def stop_after_5(step):
        if step == 5:
            raise Interrupt

    workdir = str(tmp_path / "interrupted")
    with pytest.raises(Interrupt):
        train(spec, [0], loop=loop, workdir=workdir, on_step=stop_after_5)
    resumed, history = train(spec, [0], loop=loop, workdir=workdir)
    jax.tree.map(np.testing.assert_array_equal, reference.params, resumed.params)
    assert [row["step"] for row in history] == list(range(1, 7))
    assert [row["loss"] for row in history[4:]] == [row["loss"] for row in reference_history[4:]]


def test_a_checkpoint_of_another_run_is_an_error_not_a_resume(tmp_path):
    """Resuming seed 0's checkpoint as seed 1, or under another learning rate, would report
    one run's model as another's."""
    loop = LoopConfig(log_every=1, checkpoint_every=2)
    workdir = str(tmp_path / "run")
    train(_spec(total_steps=4), [0], loop=loop, workdir=workdir)
    with pytest.raises(CheckpointOfAnotherRunError, match=r"seeds \[0\] saved, \[1\] now"):
        train(_spec(total_steps=4), [1], loop=loop, workdir=workdir)
    with pytest.raises(CheckpointOfAnotherRunError, match="spec_sha256"):
        train(_spec(total_steps=4, learning_rate=0.3), [0], loop=loop, workdir=workdir)
    # Other shapes are another run too, not damaged files to move aside.
    spec = _spec(total_steps=4)
    wider = dataclasses.replace(spec, model=dataclasses.replace(spec.model, d_model=32))
    fresh = LoopConfig(log_every=1, checkpoint_every=2, start_fresh_if_unusable=True)
    with pytest.raises(CheckpointOfAnotherRunError, match="spec_sha256"):
        train(wider, [0], loop=fresh, workdir=workdir)
    resumed, _ = train(_spec(total_steps=4), [0], loop=loop, workdir=workdir)  # the same run
    assert int(resumed.step[0]) == 4


def test_a_checkpoint_whose_arrays_cannot_fit_the_state_is_refused_untouched(tmp_path):
    """Saved by other code or for another model (here: no run record to tell), its arrays
    have other shapes: not damaged files to move aside, and not a restore to try."""
    spec = _spec()
    wider = dataclasses.replace(spec, model=dataclasses.replace(spec.model, d_model=32))
    directory = str(tmp_path / "checkpoints")
    saver = Checkpointer(directory, every=1)
    saver.save(1, compiled_init(spec)(run_keys([0])))
    saver.close()
    template = compiled_init(wider)(run_keys([0]))
    for start_fresh in (False, True):
        checkpointer = Checkpointer(directory, every=1)
        with pytest.raises(
            CheckpointLayoutError,
            match=r"written by a job of 1 device\(s\) in 1 process\(es\)\) cannot be "
            r"restored .* array\(s\) differ, first \.opt_state.*: \(1, \d+(, \d+)?\) "
            r"float32 saved, \(1, \d+(, \d+)?\) float32 now. Nothing was changed",
        ):
            checkpointer.restore(template, start_fresh_if_unusable=start_fresh)
        checkpointer.close()
    assert os.listdir(directory) == ["1"]
    assert not os.path.exists(tmp_path / "unusable_checkpoints")
    same = Checkpointer(directory, every=1)
    assert int(same.restore(compiled_init(spec)(run_keys([0]))).step[0]) == 0
    same.close()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"end_fraction": -1.0}, r"end_fraction must be in \[0, 1\], got -1.0"),
        ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
        ({"b1": 1.0}, r"b1 must be in \[0, 1\), got 1.0"),
        ({"b2": 1.5}, r"b2 must be in \[0, 1\)"),
    ],
)
def test_optimizer_settings_that_cannot_train_are_errors(kwargs, message):
    """end_fraction -1 trained by gradient ascent; b = 1 surfaced as a NaN loss."""
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(**kwargs)


@pytest.mark.parametrize("seeds", [[-1], [2**32], [1.5]])
def test_seeds_outside_uint32_are_named(seeds):
    with pytest.raises(ValueError, match=r"seeds must be integers in \[0, 2\^32\)"):
        run_keys(seeds)
