"""Reliability: failures are loud instead of plausible numbers, and interrupted work resumes.

Covers exact resume after SIGKILL, an interrupted study, damaged checkpoints, NaN in
training and evaluation, run-to-run determinism, fully masked rows in every attention
path, and positions up to 10^6 in bfloat16.
"""

import glob
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import MultiHeadAttention, MultiTokenAttention
from posenc_jax.train import (
    Checkpointer,
    LoopConfig,
    evaluate,
    generated_batches,
    train,
)
from posenc_jax.train.checkpoint import UnusableCheckpointError
from posenc_jax.train.loop import compiled_init, compiled_step, run_keys
from tests.reference import reference_sinusoidal
from tests.specs import smoke_study_command, tiny_copy_spec
from tests.test_rope_scaling import (
    default_freqs,
    dynamic_base,
    reference_linear,
    reference_llama3,
    reference_ntk,
    reference_yarn,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOOP = LoopConfig(log_every=1, checkpoint_every=2)


_spec = tiny_copy_spec


def _assert_bitwise_equal(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def _metrics_rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _subprocess_env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


# --- Exact resume after SIGKILL -----------------------------------------------------------

_TRAIN_SCRIPT = """
import os, signal, sys, time
import jax, numpy as np
from tests.test_reliability import LOOP, _spec
from posenc_jax.train import train

def save_params(state, path):
    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    np.savez(path, **{jax.tree_util.keystr(p): np.asarray(x) for p, x in leaves})

mode, workdir, out = sys.argv[1:4]
if mode == "reference_then_kill":
    reference, _ = train(_spec(), [0], loop=LOOP, workdir=os.path.join(out, "reference"))
    save_params(reference, os.path.join(out, "reference.npz"))

    def kill_after_checkpoint(step):
        if step == 5:
            # The checkpoint of step 4 is committed once its directory has its final name.
            while not os.path.isdir(os.path.join(workdir, "checkpoints", "4")):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup runs, as on a lost machine

    train(_spec(), [0], loop=LOOP, workdir=workdir, on_step=kill_after_checkpoint)
    sys.exit("not reached")
if mode == "reference_then_kill_while_saving":
    reference, _ = train(_spec(), [0], loop=LOOP, workdir=os.path.join(out, "reference"))
    save_params(reference, os.path.join(out, "reference.npz"))
    from orbax.checkpoint._src.path import atomicity

    commit = atomicity.AtomicRenameTemporaryPath.finalize

    async def kill_before_committing_step_4(self, *args, **kwargs):
        # Every file of step 4 is written into its temporary directory; the rename that
        # commits it has not happened.
        if self.get_final().name == "4":
            os.kill(os.getpid(), signal.SIGKILL)
        return await commit(self, *args, **kwargs)

    atomicity.AtomicRenameTemporaryPath.finalize = kill_before_committing_step_4
    train(_spec(), [0], loop=LOOP, workdir=workdir)
    sys.exit("not reached")
state, _ = train(_spec(), [0], loop=LOOP, workdir=workdir)
save_params(state, os.path.join(out, "resumed.npz"))
"""


def _run_train_script(mode, workdir, out):
    command = [sys.executable, "-c", _TRAIN_SCRIPT, mode, str(workdir), str(out)]
    return subprocess.run(
        command, cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True, timeout=600
    )


def test_sigkill_after_a_checkpoint_then_restart_is_bitwise_exact(tmp_path):
    workdir = tmp_path / "run"
    killed = _run_train_script("reference_then_kill", workdir, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert os.path.isdir(workdir / "checkpoints" / "4")
    assert not os.path.isdir(workdir / "checkpoints" / "6")

    _resume_and_compare_with_the_reference(workdir, tmp_path)


def _resume_and_compare_with_the_reference(workdir, tmp_path):
    """Runs the killed run again: it must end bitwise equal to the uninterrupted reference,
    with every metrics row once."""
    resumed = _run_train_script("resume", workdir, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference, final = np.load(tmp_path / "reference.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(reference.files) == sorted(final.files)
    for name in reference.files:
        assert reference[name].tobytes() == final[name].tobytes(), name
    rows, reference_rows = _metrics_rows(workdir), _metrics_rows(tmp_path / "reference")
    assert [row["step"] for row in rows] == list(range(1, 7))  # none missing, none twice
    assert rows == reference_rows


def test_sigkill_while_a_checkpoint_is_written_then_restart_is_bitwise_exact(tmp_path):
    """Killed with step 4's files written but not committed: the run resumes from step 2
    (the half-saved step is cleaned up) and ends bitwise equal to an uninterrupted run."""
    workdir = tmp_path / "run"
    killed = _run_train_script("reference_then_kill_while_saving", workdir, tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = workdir / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["2", "4.orbax-checkpoint-tmp"]
    assert _data_files(checkpoints / "4.orbax-checkpoint-tmp"), "step 4 was not being written"

    _resume_and_compare_with_the_reference(workdir, tmp_path)
    assert sorted(os.listdir(checkpoints)) == ["4", "6"]


# --- An interrupted study -----------------------------------------------------------------

_STUDY_OVERRIDES = (
    "--config.eval_multipliers=(1,2)",
    "--config.greedy_decoding=False",
    "--config.optimizer.total_steps=8",
    "--config.checkpoint_every=2",
)


def _start_study(workdir):
    command = smoke_study_command(workdir, *_STUDY_OVERRIDES)
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=_subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_when(process, condition, timeout=300):
    """SIGKILLs ``process`` as soon as ``condition()`` holds; fails if it exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the study ended before it could be killed:\n{process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the study never reached the point where it should be killed")
        time.sleep(0.01)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL


def _study_rows(workdir):
    path = os.path.join(workdir, "results.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow  # three study processes: ~20 s on an idle 2-core CPU
def test_study_killed_between_and_during_cells_finishes_every_row_once(tmp_path):
    nope_dir = tmp_path / "cells" / "copy" / "nope" / "seeds-0"
    sinusoidal_checkpoints = tmp_path / "cells" / "copy" / "sinusoidal" / "seeds-0" / "checkpoints"

    # Killed right after the first cell's rows are written, before the second cell saved
    # anything: between cells.
    _kill_when(_start_study(tmp_path), lambda: bool(_study_rows(tmp_path)))
    first_rows = _study_rows(tmp_path)
    # N = 3, 2N = 6 and every length between them.
    assert {(r["encoding"], r["eval_length"]) for r in first_rows} == {
        ("nope", n) for n in (3, 4, 5, 6)
    }
    nope_log = os.stat(nope_dir / "metrics.jsonl").st_mtime_ns

    # Killed inside the second cell, after its first checkpoint.
    _kill_when(_start_study(tmp_path), lambda: os.path.isdir(sinusoidal_checkpoints / "2"))
    assert _study_rows(tmp_path) == first_rows

    finished = _start_study(tmp_path)
    _, stderr = finished.communicate(timeout=600)
    assert finished.returncode == 0, stderr[-3000:]
    rows = _study_rows(tmp_path)
    keys = [(r["encoding"], r["task"], r["seed"], r["eval_length"]) for r in rows]
    expected = {(e, "copy", 0, n) for e in ("nope", "sinusoidal") for n in (3, 4, 5, 6)}
    assert sorted(keys) == sorted(expected)  # every row, each exactly once
    # The finished cell was neither retrained nor re-evaluated.
    assert [r for r in rows if r["encoding"] == "nope"] == first_rows
    assert os.stat(nope_dir / "metrics.jsonl").st_mtime_ns == nope_log
    log = _metrics_rows(sinusoidal_checkpoints.parent)
    assert [row["step"] for row in log] == [2, 4, 6, 8]
    for row in rows:
        assert all(math.isfinite(row[k]) for k in ("loss", "token_accuracy", "sequence_accuracy"))


# --- Damaged checkpoints ------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run with checkpoints at steps 4 and 6 (the last two kept)."""
    workdir = tmp_path_factory.mktemp("reference")
    state, history = train(_spec(), [0], loop=LOOP, workdir=str(workdir))
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]
    return workdir, state, history


def _data_files(step_dir):
    return [
        path
        for path in glob.glob(os.path.join(step_dir, "state", "**", "*"), recursive=True)
        if os.path.isfile(path)
    ]


def _truncate(step_dir, state):
    del state
    for path in _data_files(step_dir):
        os.truncate(path, os.path.getsize(path) // 2)


def _flip_a_stored_value(step_dir, state):
    """Flips one bit inside the stored bytes of the output layer's kernel.

    The arrays are stored uncompressed, so the flip changes one float and leaves every
    file readable: Orbax 0.12.8 restores such a checkpoint without an error.
    """
    raw = np.asarray(state.params["logits"]["kernel"]).tobytes()
    hits = 0
    for path in _data_files(step_dir):
        with open(path, "rb") as f:
            data = bytearray(f.read())
        at = data.find(raw)
        if at >= 0:
            data[at + len(raw) // 2 + 2] ^= 0x40
            with open(path, "wb") as f:
                f.write(data)
            hits += 1
    assert hits, "the kernel's bytes were not found in the checkpoint"


# Orbax's failed restores leave asyncio callbacks that fire after their event loop closed.
_ORBAX_NOISE = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_ORBAX_NOISE
@pytest.mark.parametrize("corrupt", [_truncate, _flip_a_stored_value])
def test_damaged_newest_checkpoint_warns_and_resumes_from_the_previous_one(
    reference_run, tmp_path, caplog, corrupt
):
    reference_dir, reference, reference_history = reference_run
    workdir = tmp_path / "run"
    shutil.copytree(reference_dir, workdir)
    corrupt(workdir / "checkpoints" / "6", reference)

    with caplog.at_level(logging.WARNING):
        resumed, history = train(_spec(), [0], loop=LOOP, workdir=str(workdir))
    assert "checkpoint at step 6" in caplog.text and "unusable" in caplog.text
    assert "resuming" in caplog.text and "from step 4" in caplog.text
    assert os.path.isdir(workdir / "unusable_checkpoints" / "6")  # kept for inspection
    _assert_bitwise_equal(resumed.params, reference.params)
    assert history == reference_history
    assert [row["step"] for row in _metrics_rows(workdir)] == list(range(1, 7))


@_ORBAX_NOISE
def test_no_usable_checkpoint_is_an_error_unless_asked_to_start_fresh(
    reference_run, tmp_path, caplog
):
    reference_dir, reference, _ = reference_run
    workdir = tmp_path / "run"
    shutil.copytree(reference_dir, workdir)
    for step in ("4", "6"):
        _truncate(workdir / "checkpoints" / step, reference)

    with pytest.raises(
        UnusableCheckpointError,
        match=r"no usable checkpoint .*step 6: .*step 4: .*start_fresh_if_unusable=True",
    ):
        train(_spec(), [0], loop=LOOP, workdir=str(workdir))
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]  # nothing touched

    fresh = LoopConfig(log_every=1, checkpoint_every=2, start_fresh_if_unusable=True)
    with caplog.at_level(logging.WARNING):
        state, _ = train(_spec(), [0], loop=fresh, workdir=str(workdir))
    assert "starting from step 0" in caplog.text
    assert sorted(os.listdir(workdir / "unusable_checkpoints")) == ["4", "6"]
    _assert_bitwise_equal(state.params, reference.params)


def test_checkpointer_without_checkpoints_restores_nothing(tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "empty"), every=1)
    template = compiled_init(_spec())(run_keys([0]))
    assert checkpointer.restore(template) is None
    checkpointer.close()


def test_a_state_holding_nan_is_never_saved(tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"), every=1)
    state = compiled_init(_spec())(run_keys([0]))
    checkpointer.save(1, state)
    checkpointer.wait()
    kernel = state.params["logits"]["kernel"]
    broken = state.replace(
        params={**state.params, "logits": {**state.params["logits"], "kernel": kernel * np.inf}}
    )
    with pytest.raises(
        FloatingPointError,
        match=r"state at step 2 holds NaN or Inf \(first in .*\['logits'\]\['kernel'\]\); it "
        r"was not saved\. Last good checkpoint: step 1",
    ):
        checkpointer.save(2, broken)
    checkpointer.close()
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]


# --- Numerical failures -------------------------------------------------------------------


def test_nan_loss_names_the_step_and_a_checkpoint_that_restores(tmp_path):
    # Warmup from 0 to 1e30: the first steps are finite, then the loss overflows (step 3).
    spec = _spec(total_steps=8, learning_rate=1e30, warmup_steps=2)
    loop = LoopConfig(log_every=1, checkpoint_every=1)
    with pytest.raises(FloatingPointError) as caught:
        train(spec, [0], loop=loop, workdir=str(tmp_path))
    message = str(caught.value)
    failed = re.search(r"at step (\d+)", message)
    checkpoint = re.search(r"[Ll]ast good checkpoint: step (\d+)", message)
    assert failed and checkpoint, message
    assert int(checkpoint.group(1)) < int(failed.group(1))
    restored = Checkpointer(str(tmp_path / "checkpoints"), every=1)
    state = restored.restore(compiled_init(spec)(run_keys([0])))
    restored.close()
    assert int(state.step[0]) == int(checkpoint.group(1))
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state.params))


def test_evaluation_refuses_non_finite_results_and_names_the_length(reference_run):
    _, state, _ = reference_run
    spec = _spec()
    batches = list(generated_batches(spec, 8, key=jax.random.key(1), num_examples=8, batch_size=8))
    finite = evaluate(spec, state.params, batches, key=jax.random.key(2), length=8)
    assert 0.0 <= finite[0]["token_accuracy"] <= 1.0 and math.isfinite(finite[0]["loss"])

    broken = jax.tree_util.tree_map_with_path(
        lambda path, x: x * np.nan if "logits" in jax.tree_util.keystr(path) else x,
        state.params,
    )
    with pytest.raises(FloatingPointError, match=r"at length 8 gave .*nan.* seed index 0"):
        evaluate(spec, broken, batches, key=jax.random.key(2), length=8)
    tokens = batches[0]["inputs"].shape[-1]
    with pytest.raises(FloatingPointError, match=f"on sequences of {tokens} tokens"):
        evaluate(spec, broken, batches, key=jax.random.key(2))


# --- Determinism --------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_runs():
    spec = _spec()
    first, first_history = train(spec, [0])
    # The second run traces and compiles its own programs, as a new process would.
    compiled_init.cache_clear()
    compiled_step.cache_clear()
    second, second_history = train(spec, [0])
    _assert_bitwise_equal(first, second)
    assert first_history == second_history
    batches = list(generated_batches(spec, 8, key=jax.random.key(1), num_examples=8, batch_size=8))
    results = [evaluate(spec, s.params, batches, key=jax.random.key(2)) for s in (first, second)]
    assert results[0] == results[1]


# --- Fully masked query rows --------------------------------------------------------------

_ATTENTION = {
    "dense": lambda: MultiHeadAttention(num_heads=2, causal=True, implementation="dense"),
    "chunked": lambda: MultiHeadAttention(num_heads=2, causal=True, block_size=2),
    "multi_token": lambda: MultiTokenAttention(num_heads=2, causal=True),
}


@pytest.mark.parametrize("path", sorted(_ATTENTION))
def test_fully_masked_rows_give_zeros_and_zero_gradients(path, rng):
    module = _ATTENTION[path]()
    x = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
    padding = np.ones((2, 5), bool)
    padding[1] = False  # every key of example 1 is padding: all its query rows are empty
    padding = jnp.asarray(padding)
    params = module.init(jax.random.key(0), x, padding_mask=padding)["params"]

    def loss(params, x):
        out = module.apply({"params": params}, x, padding_mask=padding)
        return jnp.sum(out**2 + out), out

    (_, out), (param_grads, x_grad) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        params, x
    )
    assert np.all(np.isfinite(out)) and np.all(np.asarray(out[1]) == 0.0)
    assert np.abs(np.asarray(out[0])).max() > 0
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(param_grads))
    assert np.all(np.asarray(x_grad[1]) == 0.0) and np.all(np.isfinite(x_grad))


# --- Positions up to 10^6 in bfloat16 -----------------------------------------------------

_DIM = 64
_FAR = 10**6 - 16 + np.arange(16)[None]  # the last positions below 10^6
_CURRENT_LENGTH = 10**6  # largest position + 1, what the length-dependent methods read

# name: (hyperparameters, float64 frequencies, amplitude on q and k), from the papers.
_ROTARY = {
    "rope": ({}, default_freqs(_DIM, 1e4), 1.0),
    "rope_pi": ({"factor": 4.0}, reference_linear(_DIM, 1e4, 4.0), 1.0),
    "rope_ntk": ({"factor": 4.0}, reference_ntk(_DIM, 1e4, 4.0), 1.0),
    "rope_dynamic_ntk": (
        {"factor": 2.0, "original_max_position_embeddings": 2048},
        default_freqs(_DIM, dynamic_base(_DIM, 1e4, 2.0, 2048, _CURRENT_LENGTH)),
        1.0,
    ),
    "rope_yarn": (
        {"factor": 4.0, "original_max_position_embeddings": 2048},
        reference_yarn(_DIM, 1e4, 4.0, 2048),
        0.1 * math.log(4.0) + 1.0,  # Peng et al. 2023, Eq. 22: sqrt(1/t) = 0.1 ln s + 1
    ),
    "rope_llama3": ({}, reference_llama3(_DIM, 5e5, 8.0, 1.0, 4.0, 8192), 1.0),
    "rope_longrope": (
        # Beyond the original length every pair is divided by its long factor (here all
        # equal to the extension ratio), and q, k scale by sqrt(1 + ln s / ln L0).
        {"factor": 4.0, "original_max_position_embeddings": 2048},
        default_freqs(_DIM, 1e4) / 4.0,
        math.sqrt(1.0 + math.log(4.0) / math.log(2048)),
    ),
}


def _reference_rotation(x, positions, inv_freq, amplitude):
    """Half layout (pairs t, t + d/2) in float64, Su et al. 2021 Eq. 34."""
    x = np.asarray(x, np.float64)
    half = len(inv_freq)
    angles = positions[..., None].astype(np.float64) * inv_freq  # [B, L, d/2]
    cos, sin = np.cos(angles)[..., None, :], np.sin(angles)[..., None, :]
    first, second = x[..., :half], x[..., half : 2 * half]
    out = x.copy()
    out[..., :half] = cos * first - sin * second
    out[..., half : 2 * half] = sin * first + cos * second
    return amplitude * out


@pytest.mark.parametrize(
    "name, mode",
    [(name, mode) for name in _ROTARY for mode in ("eager", "jit")],
)
def test_rotary_at_positions_near_one_million_in_bfloat16(name, mode, rng):
    kwargs, inv_freq, amplitude = _ROTARY[name]
    encoding = pj.encodings.get(name, **kwargs)
    q = jnp.asarray(rng.standard_normal((1, 16, 2, _DIM)), jnp.bfloat16)

    def rotate(q, positions):
        return encoding.apply({}, "rotate", q, q, positions, positions)[0]

    got = (jax.jit(rotate) if mode == "jit" else rotate)(q, _FAR)
    assert got.dtype == jnp.bfloat16
    want = _reference_rotation(q.astype(jnp.float32), _FAR, inv_freq, amplitude)
    # One bfloat16 rounding of the result is 2^-9 relative; allow 2^-8 and 2^-10 absolute.
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), want, rtol=2**-8, atol=2**-10)


def test_sinusoidal_at_positions_near_one_million_in_bfloat16():
    positions = 10**6 - 32 + np.arange(32)[None]
    x = jnp.zeros((1, 32, _DIM), jnp.bfloat16)
    got = pj.encodings.get("sinusoidal").apply({}, "embed", x, positions)
    assert got.dtype == jnp.bfloat16
    want = reference_sinusoidal(positions, _DIM)
    np.testing.assert_allclose(np.asarray(got.astype(jnp.float32)), want, atol=2**-8)


# --- Known positions inside jit -----------------------------------------------------------


def test_known_positions_inside_jit_are_checked_on_the_host():
    """A concrete position array closed over by a jitted function is read, not traced."""
    learned = pj.encodings.get("learned", max_length=4)
    x = jnp.zeros((1, 2, 8))
    inside = jnp.array([[0, 3]])
    params = learned.init(jax.random.key(0), "embed", x, inside)
    embed = jax.jit(lambda x: learned.apply(params, "embed", x, inside))
    np.testing.assert_array_equal(embed(x), learned.apply(params, "embed", x, inside))
    outside = jnp.array([[0, 9]])
    with pytest.raises(ValueError, match="position 9, but it represents positions 0..3"):
        jax.jit(lambda x: learned.apply(params, "embed", x, outside))(x)


def _learned_table_apply():
    learned = pj.encodings.get("learned", max_length=4)
    x = jnp.zeros((1, 2, 8))
    params = learned.init(jax.random.key(0), "embed", x, jnp.array([[0, 1]]))
    return lambda positions: learned.apply(params, "embed", x, positions)


# Each applies the table to a stack of two position arrays [2, 1, 2].
_TRANSFORMS = {
    "jit": lambda embed: jax.jit(lambda stack: [embed(stack[0]), embed(stack[1])]),
    "vmap": lambda embed: jax.jit(jax.vmap(embed)),
    "vmap of vmap": lambda embed: jax.jit(lambda stack: jax.vmap(jax.vmap(embed))(stack[:, None])),
    "scan": lambda embed: jax.jit(
        lambda stack: jax.lax.scan(lambda carry, p: (carry, embed(p)), 0, stack)[1]
    ),
    "grad": lambda embed: jax.jit(
        lambda stack: jax.grad(lambda s: jnp.sum(s * embed(stack[0]) + s * embed(stack[1])))(1.0)
    ),
}


@pytest.mark.parametrize("transform", sorted(_TRANSFORMS))
def test_traced_positions_are_checked_when_run(transform):
    """Under jit, vmap, scan and grad a position past the table is an error whose message
    names the position and the table, and positions inside it raise nothing: a batched
    check must neither report the good element (a vmapped lax.cond runs both branches)
    nor miss the bad one."""
    run = _TRANSFORMS[transform](_learned_table_apply())
    good = jnp.array([[[0, 1]], [[2, 3]]])
    jax.block_until_ready(run(good))
    with pytest.raises(
        jax.errors.JaxRuntimeError,
        match=r"learned position table was asked for position 9, but it represents "
        r"positions 0\.\.3 only",
    ):
        jax.block_until_ready(run(good.at[1, 0, 1].set(9)))
