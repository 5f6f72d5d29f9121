"""The error catalogue: every bad input the package rejects, and the message it gives.

Each case is one call that must fail with a clear error naming the bad value and what
would be valid, at trace or config time where it can (never a silent clamp, a NaN or a
plausible number). ``readme`` is the phrase under which README.md's error table (between
the ``errors:start`` and ``errors:end`` markers) explains what the error means and what to
do; a test checks that every phrase is there.
"""

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from experiments.cell_shards import (
    ConflictingRowsError,
    DuplicateRowsError,
    merge_shard_rows,
    parse_cell_shard,
)
from experiments.configs import smoke
from experiments.length_extrapolation import check_shards_merged, eval_lengths
from experiments.results import DamagedResultsError, ResultsFile
from experiments.study_lock import WorkDirInUseError, study_lock
from posenc_jax._digest import content_digest
from posenc_jax.attention import MTAConfig, MultiHeadAttention, MultiTokenAttention
from posenc_jax.data import get_task
from posenc_jax.data.corpus import local_text_config
from posenc_jax.train import (
    Checkpointer,
    LoopConfig,
    OptimizerConfig,
    generated_batches,
    train,
)
from posenc_jax.train.checkpoint import CheckpointLayoutError
from posenc_jax.train.distributed import HalfConfiguredJobError, join_job
from posenc_jax.train.evaluate import check_eval_lengths
from posenc_jax.train.loop import compiled_init, run_keys
from tests.specs import tiny_copy_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = jax.random.key(0)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    error: type[BaseException]
    match: str  # regex the message must contain: the bad value and what is valid
    call: Callable[[str], object]  # receives a scratch directory
    readme: str


def _spec(**kwargs):
    return tiny_copy_spec(**{"encoding": "nope", "batch_size": 4, "total_steps": 2, **kwargs})


def _init(module, length=4, width=8):
    """Traces ``module.init`` on ``[1, length, width]`` inputs without computing anything."""
    return jax.eval_shape(module.init, KEY, jnp.zeros((1, length, width)))


def _attention(
    q_shape=(1, 4, 2, 8),
    k_shape=(1, 4, 2, 8),
    v_shape=None,
    dtype=jnp.float32,
    k_dtype=None,
    **kwargs,
):
    q = jnp.zeros(q_shape, dtype)
    k = jnp.zeros(k_shape, k_dtype or dtype)
    v = jnp.zeros(v_shape or k_shape, k_dtype or dtype)
    return pj.attention.dot_product_attention(q, k, v, **kwargs)


def _learned_embed(positions, max_length=4, jit=False):
    learned = pj.encodings.get("learned", max_length=max_length)
    x = jnp.zeros((1, positions.shape[-1], 8))
    params = learned.init(KEY, "embed", x, jnp.zeros_like(positions))
    if not jit:
        return learned.apply(params, "embed", x, positions)
    return jax.block_until_ready(jax.jit(lambda p: learned.apply(params, "embed", x, p))(positions))


def _learned_known_positions_inside_jit():
    """Concrete positions closed over by a jitted function: checked when it is traced."""
    learned = pj.encodings.get("learned", max_length=4)
    x = jnp.zeros((1, 2, 8))
    params = learned.init(KEY, "embed", x, jnp.array([[0, 1]]))
    known = jnp.array([[0, 9]])
    return jax.jit(lambda x: learned.apply(params, "embed", x, known))(x)


def _decode_past_the_cache(positions):
    """A cache of 4 positions, filled, then fed one more token at ``positions``."""
    layer = MultiHeadAttention(num_heads=2, causal=True, decode=True)
    x = jnp.zeros((1, 4, 8))
    variables = layer.init(KEY, x)
    _, filled = layer.apply(variables, x, mutable=["cache"])
    return layer.apply(
        {"params": variables["params"], **filled},
        x[:, :1],
        q_positions=jnp.asarray(positions),
        mutable=["cache"],
    )


def _results_with_a_torn_line(directory):
    with open(os.path.join(directory, "results.jsonl"), "w") as f:
        f.write('{"encoding": "nope", "eval_length": 3, "seed": 0, "task": "copy"}\n')
        f.write('{"encoding": "no')
    return ResultsFile(directory)


def _lock_twice(directory):
    with study_lock(directory), study_lock(directory):
        pass


def _study_config(**overrides):
    config = smoke.get_config()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _text_file(directory, text, name):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _not_a_directory(directory):
    """A path below a regular file: no one, root included, can create it."""
    blocker = _text_file(directory, "a file, not a directory", "blocker")
    return os.path.join(blocker, "run")


def _rows_file(directory, name, rows):
    """A results file of ``rows``, each (encoding, seed, token accuracy) of task copy at 3."""
    lines = [
        f'{{"encoding": "{e}", "task": "copy", "seed": {s}, "eval_length": 3, '
        f'"token_accuracy": {a}}}\n'
        for e, s, a in rows
    ]
    return _text_file(directory, "".join(lines), name)


def _two_shards(directory, second_rows, merged_rows=()):
    """Shard files 0 and 1 of 2 (the first holds nope's seed 0), and results.jsonl."""
    _rows_file(directory, "results-shard-0-of-2.jsonl", [("nope", 0, 0.5)])
    _rows_file(directory, "results-shard-1-of-2.jsonl", second_rows)
    _rows_file(directory, "results.jsonl", merged_rows)
    return directory


def _restore_into_another_shape(directory):
    saver = Checkpointer(directory, every=1)
    saver.save(1, compiled_init(_spec())(run_keys([0])))
    saver.close()
    wider = _spec()
    wider = dataclasses.replace(wider, model=dataclasses.replace(wider.model, d_model=32))
    Checkpointer(directory, every=1).restore(compiled_init(wider)(run_keys([0])))


class CommandFailed(Exception):
    """The study CLI exited with an error; the message is what it wrote to stderr."""


def _cli(*arguments):
    command = [sys.executable, "-m", "experiments.length_extrapolation", *arguments]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if result.returncode == 0:
        raise AssertionError(f"the study CLI accepted {arguments}")
    raise CommandFailed(result.stderr)


CASES = [
    # --- names ---------------------------------------------------------------------------
    Case(
        "unknown encoding name",
        ValueError,
        r"unknown encoding 'nonsense'; valid names: .*\balibi\b.*\brope\b",
        lambda tmp: pj.encodings.get("nonsense"),
        "unknown encoding",
    ),
    Case(
        "unknown encoding hyperparameter",
        ValueError,
        r"encoding 'rope' got unknown hyperparameter\(s\) \['max_length'\]; it accepts: .*base",
        lambda tmp: pj.encodings.get("rope", max_length=8),
        "got unknown hyperparameter",
    ),
    Case(
        "unknown task name",
        ValueError,
        r"unknown task 'juggling'; valid tasks: .*\bcopy\b",
        lambda tmp: get_task("juggling"),
        "unknown task",
    ),
    Case(
        "unknown preset",
        CommandFailed,
        r"(?s)--config could not be loaded: .*nonexistent\.py.*Valid presets: .*smoke\.py",
        lambda tmp: _cli("--config", "experiments/configs/nonexistent.py", "--workdir", tmp),
        "--config could not be loaded",
    ),
    Case(
        "config key that does not exist",
        CommandFailed,
        r"--config override names no config key: 'not_a_key'\. Top-level keys: .*train_length",
        lambda tmp: _cli(
            "--config", "experiments/configs/smoke.py", "--config.not_a_key=3", "--workdir", tmp
        ),
        "--config override names no config key",
    ),
    # --- positions a table or range cannot represent --------------------------------------
    Case(
        "learned table shorter than the sequence",
        ValueError,
        r"learned position table has max_length=4 rows but the sequence has 5 tokens; build "
        r"it with max_length >= 5",
        lambda tmp: _learned_embed(jnp.arange(5)[None]),
        "learned position table has max_length",
    ),
    Case(
        "learned position past the table (known positions, inside jit)",
        ValueError,
        r"learned position table was asked for position 9, but it represents positions 0\.\.3",
        lambda tmp: _learned_known_positions_inside_jit(),
        "was asked for position",
    ),
    Case(
        "learned position past the table (traced positions, when run)",
        jax.errors.JaxRuntimeError,
        r"learned position table was asked for position 9, but it represents positions 0\.\.3",
        lambda tmp: _learned_embed(jnp.array([[0, 9]]), jit=True),
        "was asked for position",
    ),
    Case(
        "learned table shorter than the longest evaluation sequence",
        ValueError,
        r"max_length=12 rows but the sequence has \d+ tokens",
        lambda tmp: check_eval_lengths(
            _spec(encoding=pj.encodings.get("learned", max_length=12)), [4, 16]
        ),
        "learned position table has max_length",
    ),
    Case(
        "randomized range shorter than the evaluation length",
        ValueError,
        r"a sequence of length \d+ needs at least \d+ distinct positions, but max_position=16; "
        r"build the encoding with max_position >= \d+",
        lambda tmp: check_eval_lengths(
            _spec(encoding=pj.encodings.get("randomized", base="rope", max_position=16)),
            [4, 32],
        ),
        "randomized positions",
    ),
    Case(
        "xPos position beyond float32 range",
        ValueError,
        r"xPos position 200000 is too large",
        lambda tmp: pj.functional.xpos_scales(
            np.array([[0, 200_000]]), np.array([[0, 200_000]]), pj.functional.xpos_zeta(8)
        ),
        "xPos position",
    ),
    Case(
        "T5 bucket layout that cannot hold its exact buckets",
        ValueError,
        r"t5 max_distance=4 must exceed the \d+ exact buckets",
        lambda tmp: pj.functional.t5_relative_bucket(
            jnp.arange(3), bidirectional=True, num_buckets=32, max_distance=4
        ),
        "t5 max_distance",
    ),
    Case(
        "Shaw clipping distance below one",
        ValueError,
        r"Shaw max_distance must be a positive integer, got 0",
        lambda tmp: _init(
            MultiHeadAttention(num_heads=2, encoding=pj.encodings.get("shaw", max_distance=0))
        ),
        "Shaw max_distance",
    ),
    # --- rotary ----------------------------------------------------------------------------
    Case(
        "odd rotary dimension",
        ValueError,
        r"rotated dimension int\(7 \* rotary_fraction 1\.0\) = 7 must be a positive even number",
        lambda tmp: _init(
            MultiHeadAttention(num_heads=1, head_dim=7, encoding=pj.encodings.get("rope"))
        ),
        "rotated dimension",
    ),
    Case(
        "odd rotary dimension (functional)",
        ValueError,
        r"the rotated dimension must be a positive even integer, got 7",
        lambda tmp: pj.functional.rope_inv_freq(7),
        "rotated dimension",
    ),
    Case(
        "unknown RoPE layout",
        ValueError,
        r"unknown RoPE layout 'neox'; valid layouts: half, interleaved",
        lambda tmp: _init(
            MultiHeadAttention(num_heads=2, encoding=pj.encodings.get("rope", layout="neox"))
        ),
        "unknown RoPE layout",
    ),
    # --- attention shapes, dtypes, masks ---------------------------------------------------
    Case(
        "heads not divisible by KV heads (module)",
        ValueError,
        r"num_heads=4 must be a positive multiple of num_kv_heads=3",
        lambda tmp: _init(MultiHeadAttention(num_heads=4, num_kv_heads=3), width=24),
        "multiple of num_kv_heads",
    ),
    Case(
        "heads not divisible by KV heads (function)",
        ValueError,
        r"q has 4 heads and k/v have 3; the number of query heads must be a multiple",
        lambda tmp: _attention(q_shape=(1, 4, 4, 8), k_shape=(1, 4, 3, 8)),
        "must be a multiple of the number of key/value heads",
    ),
    Case(
        "q and k head dims differ",
        AssertionError,
        r"q and k must have the same head dim K",
        lambda tmp: _attention(k_shape=(1, 4, 2, 4)),
        "same head dim",
    ),
    Case(
        "k and v shapes differ",
        AssertionError,
        r"k and v must share \[B, S, G\]",
        lambda tmp: _attention(v_shape=(1, 5, 2, 8)),
        "must share [B, S, G]",
    ),
    Case(
        "q and k dtypes differ",
        AssertionError,
        r"q is float32 but k is bfloat16; cast them to one",
        lambda tmp: _attention(k_dtype=jnp.bfloat16),
        "cast them to one",
    ),
    Case(
        "mask of the wrong shape",
        ValueError,
        r"mask has shape \(1, 1, 3, 4\); it must be rank 4 and broadcastable to "
        r"\[B, H, L, S\] = \[1, 2, 4, 4\]",
        lambda tmp: _attention(mask=jnp.ones((1, 1, 3, 4), bool)),
        "mask has shape",
    ),
    Case(
        "mask that is not boolean",
        ValueError,
        r"mask must be boolean \(True = attend\), got dtype float32",
        lambda tmp: _attention(mask=jnp.ones((1, 1, 4, 4), jnp.float32)),
        "mask must be boolean",
    ),
    Case(
        "positions that are not integers",
        ValueError,
        r"q_positions must be an integer array, got dtype float32",
        lambda tmp: _attention(q_positions=jnp.arange(4, dtype=jnp.float32)),
        "must be an integer array",
    ),
    Case(
        "positions of the wrong shape",
        ValueError,
        r"q_positions has shape \(1, 5\); expected \[4\] or \[1, 4\]",
        lambda tmp: _attention(q_positions=jnp.arange(5)),
        "q_positions has shape",
    ),
    Case(
        "unknown attention implementation",
        ValueError,
        r"implementation='flash'; valid: auto, dense, chunked, prefix, jax, cudnn",
        lambda tmp: _attention(implementation="flash"),
        "implementation=",
    ),
    Case(
        "tiles asked of the dense path",
        ValueError,
        r"block_size=2 asks for tiles but implementation='dense'",
        lambda tmp: _attention(block_size=2, implementation="dense"),
        "asks for tiles",
    ),
    Case(
        "chunked attention with an encoding that needs the full map",
        ValueError,
        r"block_size=2 asks for the chunked backend, but this encoding's contextual term needs "
        r"the full \[B, H, L, S\] logit map \(needs_dense\)",
        lambda tmp: _init(
            MultiHeadAttention(num_heads=2, encoding=pj.encodings.get("shaw"), block_size=2)
        ),
        "contextual term needs the full",
    ),
    Case(
        "decoding past the end of a key/value cache",
        ValueError,
        r"the key/value cache holds 4 positions and 4 are written; 1 more do not fit\. "
        r"Initialize the cache with at least 5 positions",
        lambda tmp: _decode_past_the_cache(positions=[4]),
        "key/value cache holds",
    ),
    Case(
        "decoding at the empty cache slots' position",
        ValueError,
        r"decoding with a key/value cache takes positions below 1073741824 \(2\*\*30 marks an "
        r"empty slot\), got 1073741824",
        lambda tmp: _decode_past_the_cache(positions=[2**30]),
        "takes positions below",
    ),
    # --- causal-only encodings and Multi-Token Attention ----------------------------------
    Case(
        "xPos in non-causal attention",
        ValueError,
        r"encoding XPos is defined for causal attention only; build the attention with "
        r"causal=True",
        lambda tmp: _init(MultiHeadAttention(num_heads=2, encoding=pj.encodings.get("xpos"))),
        "defined for causal attention only",
    ),
    Case(
        "CoPE in non-causal attention",
        ValueError,
        r"encoding CoPE is defined for causal attention only",
        lambda tmp: _init(MultiHeadAttention(num_heads=2, encoding=pj.encodings.get("cope"))),
        "defined for causal attention only",
    ),
    Case(
        "MTA key-query convolution in non-causal attention",
        ValueError,
        r"layer 0 has a key-query convolution, which is defined for causal attention only",
        lambda tmp: _init(MultiTokenAttention(num_heads=2, causal=False)),
        "key-query convolution",
    ),
    Case(
        "even MTA key kernel",
        ValueError,
        r"pre_softmax_kernel=\(2, 4\); give \(c_q, c_k\) with positive integers and c_k odd",
        lambda tmp: MTAConfig(pre_softmax_kernel=(2, 4)),
        "c_k odd",
    ),
    # --- lengths, sizes, steps, learning rate ---------------------------------------------
    Case(
        "evaluation length below the train length",
        ValueError,
        r"evaluation length\(s\) \[2\] are below the train length 4; evaluate at lengths >= 4",
        lambda tmp: check_eval_lengths(_spec(train_length=4), [2, 4, 8]),
        "below the train length",
    ),
    Case(
        "study evaluation multiplier below one",
        ValueError,
        r"eval_multipliers=\[0\.5, 1\]: evaluation lengths must be at least the train length",
        lambda tmp: eval_lengths(_study_config(eval_multipliers=(0.5, 1))),
        "at least the train length",
    ),
    Case(
        "zero length",
        ValueError,
        r"task 'copy' length must be positive, got 0",
        lambda tmp: get_task("copy").sample(KEY, 2, 0),
        "length must be positive",
    ),
    Case(
        "negative train length",
        ValueError,
        r"task 'copy' length must be positive, got -1",
        lambda tmp: _spec(train_length=-1),
        "length must be positive",
    ),
    Case(
        "zero batch size",
        ValueError,
        r"batch_size must be positive, got 0",
        lambda tmp: _spec(batch_size=0),
        "batch_size must be positive",
    ),
    Case(
        "zero training steps",
        ValueError,
        r"total_steps must be positive, got 0",
        lambda tmp: OptimizerConfig(total_steps=0, warmup_steps=0),
        "total_steps must be positive",
    ),
    Case(
        "negative learning rate",
        ValueError,
        r"learning_rate must be positive, got -0\.001",
        lambda tmp: OptimizerConfig(learning_rate=-1e-3),
        "learning_rate must be positive",
    ),
    Case(
        "warmup as long as training",
        ValueError,
        r"warmup_steps=10 must be in \[0, total_steps=10\)",
        lambda tmp: OptimizerConfig(total_steps=10, warmup_steps=10),
        "warmup_steps",
    ),
    Case(
        "zero logging interval",
        ValueError,
        r"log_every must be positive, got 0",
        lambda tmp: LoopConfig(log_every=0),
        "log_every must be positive",
    ),
    Case(
        "zero checkpoint interval",
        ValueError,
        r"checkpoint every must be a positive number of steps, got 0",
        lambda tmp: Checkpointer(tmp, every=0),
        "checkpoint every must be a positive",
    ),
    Case(
        "zero evaluation examples",
        ValueError,
        r"num_examples \(0\) and batch_size \(8\) must be positive",
        lambda tmp: next(generated_batches(_spec(), 4, key=KEY, num_examples=0, batch_size=8)),
        "num_examples",
    ),
    # --- files and directories -------------------------------------------------------------
    Case(
        "corpus file that is missing",
        ValueError,
        r"corpus file '.*nothing_here\.txt' does not exist",
        lambda tmp: local_text_config(os.path.join(tmp, "nothing_here.txt")),
        "corpus file",
    ),
    Case(
        "corpus file that is empty",
        ValueError,
        r"corpus file '.*empty\.txt' is empty",
        lambda tmp: local_text_config(_text_file(tmp, "", "empty.txt")),
        "corpus file",
    ),
    # --- decays, sinks, stick-breaking ---------------------------------------------------
    Case(
        "fixed forget gate without decay times",
        ValueError,
        r"fox gate='fixed' sets its biases from decay_time; give decay_time=\(T_min, T_max\)",
        lambda tmp: pj.encodings.get("fox", gate="fixed"),
        "sets its biases from decay_time",
    ),
    Case(
        "a decay in cross-attention",
        ValueError,
        r"the encoding's decay term \(c_i - c_j over one sequence\) needs self-attention",
        lambda tmp: jax.eval_shape(
            MultiHeadAttention(num_heads=2, causal=True, encoding=pj.encodings.get("fox")).init,
            KEY,
            jnp.zeros((1, 4, 8)),
            jnp.zeros((1, 3, 8)),
        ),
        "needs self-attention",
    ),
    Case(
        "sink logits of the wrong shape",
        ValueError,
        r"sink_logits has shape \(3,\); expected one logit per query head, \[H\] = \[2\]",
        lambda tmp: _attention(sink_logits=jnp.zeros(3)),
        "sink_logits has shape",
    ),
    Case(
        "bidirectional stick-breaking",
        ValueError,
        r"stick-breaking attention is defined for causal attention .*pass causal=True",
        lambda tmp: _attention(stick_breaking=pj.attention.StickBreaking()),
        "stick-breaking attention is defined for causal attention",
    ),
    Case(
        "fused stick-breaking",
        ValueError,
        r"implementation='jax': it runs jax.nn.dot_product_attention on plain or causal "
        r"attention .* but this call has stick_breaking weights; use 'auto', 'dense' or",
        lambda tmp: _attention(
            causal=True, stick_breaking=pj.attention.StickBreaking(), implementation="jax"
        ),
        "this call has stick_breaking weights",
    ),
    Case(
        "a decay with a streaming cache",
        ValueError,
        r"streaming evicts the tokens between the sinks and the recent window, but the "
        r"encoding's decay term \(c_i - c_j\) .* undefined over evicted tokens",
        lambda tmp: jax.eval_shape(
            MultiHeadAttention(
                num_heads=2,
                causal=True,
                encoding=pj.encodings.get("fox"),
                decode=True,
                streaming=pj.attention.Streaming(2, 3),
            ).init,
            KEY,
            jnp.zeros((1, 4, 8)),
        ),
        "streaming evicts the tokens between the sinks",
    ),
    # --- several hosts and cell shards --------------------------------------------------------
    Case(
        "multi-host job without a coordinator",
        HalfConfiguredJobError,
        r"half configured: process_id=1 given, but no coordinator_address and no num_processes",
        lambda tmp: join_job(process_id=1),
        "a multi-host job was half configured",
    ),
    Case(
        "cell shard out of range",
        ValueError,
        r"cell_shard='2/2'; give i/n with 0 <= i < n",
        lambda tmp: parse_cell_shard("2/2"),
        "cell_shard='i/n'; give i/n with 0 <= i < n",
    ),
    Case(
        "a row in two shard files",
        DuplicateRowsError,
        r"the row .*'nope'.* is in results-shard-0-of-2.jsonl and in results-shard-1-of-2.jsonl",
        lambda tmp: merge_shard_rows(_two_shards(tmp, [("nope", 0, 0.5)])),
        "DuplicateRowsError",
    ),
    Case(
        "a shard row that differs from the merged one",
        ConflictingRowsError,
        r"results.jsonl already holds a row for \('rope', 'copy', 0, 3\) that differs .* "
        r"in \['token_accuracy'\]",
        lambda tmp: merge_shard_rows(
            _two_shards(tmp, [("rope", 0, 0.25)], merged_rows=[("rope", 0, 0.75)])
        ),
        "ConflictingRowsError",
    ),
    Case(
        "a whole study over unmerged shards",
        ValueError,
        r"holds 2 row\(s\) of cell shards .* that .*results.jsonl lacks: merge them first",
        lambda tmp: check_shards_merged(_two_shards(tmp, [("rope", 0, 0.25)]), ResultsFile(tmp)),
        "row(s) of cell shards",
    ),
    Case(
        "checkpoint of arrays another shape",
        CheckpointLayoutError,
        r"cannot be restored into this run's state: \d+ array\(s\) differ, first .*: "
        r"\(1, 16\) float32 saved, \(1, 32\) float32 now",
        _restore_into_another_shape,
        "CheckpointLayoutError",
    ),
    Case(
        "work dir that is not writable",
        ValueError,
        r"work dir '.*blocker/run' is not a writable directory \(.*\); choose a directory",
        lambda tmp: train(_spec(), [0], workdir=_not_a_directory(tmp)),
        "is not a writable directory",
    ),
    Case(
        "a torn last line in results.jsonl",
        DamagedResultsError,
        r"results\.jsonl, line 2 of 2: it has no line end \(a write cut short\): "
        r"'\{\"encoding\": \"no'\. It is not read as a row",
        lambda tmp: _results_with_a_torn_line(tmp).rows(),
        "DamagedResultsError",
    ),
    Case(
        "a second study in a work dir in use",
        WorkDirInUseError,
        rf"another study \(process {os.getpid()}\) is running in the work dir '.*'; it holds "
        r".*results\.jsonl\.lock",
        lambda tmp: _lock_twice(tmp),
        "WorkDirInUseError",
    ),
    Case(
        "a spec holding an object known by its address",
        TypeError,
        r"cannot digest object by content: it is known only by its printed form "
        r"'<object object at 0x[0-9a-f]+>', which holds a memory address",
        lambda tmp: content_digest({"encoding": object()}),
        "cannot digest X by content",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_a_clear_error(case, tmp_path):
    with pytest.raises(case.error, match=case.match):
        case.call(str(tmp_path))


def test_the_catalogue_is_large_and_has_no_duplicates():
    assert len(CASES) >= 20
    assert len({case.name for case in CASES}) == len(CASES)


def test_readme_explains_every_error():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    start, end = readme.index("<!-- errors:start -->"), readme.index("<!-- errors:end -->")
    table = readme[start:end]
    missing = sorted({case.readme for case in CASES if case.readme not in table})
    assert not missing, f"README error table lacks: {missing}"
