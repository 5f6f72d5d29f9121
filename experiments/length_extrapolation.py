"""Length-extrapolation study: train each encoding on lengths up to N, evaluate at N .. 8N.

The protocol of the length-generalization literature: every training example draws its
own length uniformly from ``[min_train_length, N]`` (1..N by default, as Delétang et al.
2023 and Ruoss et al. 2023; padded into one compiled shape, weight 0 on padding;
``min_train_length = N`` trains at the single length N), evaluation covers every length
in ``[N, 2N]`` and 4N, 8N, and the table shows the accuracies at each length with the two
summary scores of the references: the RPE score (mean per-token accuracy over lengths
> N) and the NoPE score (exact match over (N, 2N], greedy decoding for decoder tasks).

A language-model task (``char_lm``; presets ``lm_quick`` and ``lm``) is trained on windows of
N characters of a corpus (``--config.lm.corpus``: a text file, the offline ``python_docs``
or a TFDS name) and scored in bits per character on its held-out text at every evaluation
length, in non-overlapping windows (Press et al. 2022), optionally in sliding ones and
decoded token by token with StreamingLLM's cache, overall and by position in the window;
its rows, table section and plots say so (``experiments/lm_study.py``).

Command (``make study`` runs the quick preset):
  python -m experiments.length_extrapolation --config experiments/configs/quick.py \
      --workdir runs/quick [--config.train_length=16 --config.seeds='(0,1,2)']

Writes into the work dir: ``results.jsonl`` (one row per encoding x task x seed x eval
length; a re-run trains only the seeds that lack a row and never writes a row twice),
``table.md`` (mean and spread over seeds, this configuration's cells only), ``plots/*.png``
(accuracy vs evaluation length, the training range shaded), and per cell the training
metrics and checkpoints of each group of seeds trained together under
``cells/<task>/<encoding>/seeds-<s1>-<s2>.../``. Rows record the package version and git
commit that wrote them; rows of other code in the same work dir are reported.

Several hosts (a TPU pod slice, GPU hosts, a SLURM job) run the study as one job: every
process runs this same command, joined through ``--config.distributed.*`` (or JAX's
auto-detection, see ``posenc_jax.train.distributed``); one mesh spans every device,
process 0 alone writes the results, table, plots and evaluation sets, and a process that
fails stops the others. A sweep larger than one job splits its cells over independent
jobs (``--config.cell_shard=i/n``, ``experiments/cell_shards.py``) and merges them with
``python -m experiments.merge_shards``.

One study runs on a results file at a time (``results.jsonl.lock``, or the cell shard's
results file's, holds the process id of the job's process 0); a second one refuses to start.

Each row records two digests: of the settings every cell shares (``study_sha256``: model,
optimizer, train length, batch, evaluation) and of its cell's run spec and evaluation
(``config_sha256``). A work dir whose rows, or an interrupted cell's checkpoints, were made
under another configuration is refused before any training: its rows would otherwise be
reported, or mixed in, as this configuration's. Rows written before the digests existed
are taken without a check (with a warning).
"""

import contextlib
import functools
import glob
import hashlib
import json
import os
import sys
import time

import jax
from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags
from tqdm import tqdm

import posenc_jax as pj
from experiments.cell_shards import CellShard, merge_shard_rows, parse_cell_shard, shard_files
from experiments.configs import base as base_config
from experiments.lm_study import (
    check_lm_cell,
    is_language_model,
    lm_evaluation_settings,
    lm_metrics,
    study_task,
)
from experiments.memory_pages import report_small_pages
from experiments.plots import extrapolation_plots
from experiments.results import (
    RESULTS_FILE,
    ResultsFile,
    configured_rows,
    markdown_table,
    provenance,
)
from experiments.study_lock import study_lock
from posenc_jax._checks import check_writable_dir
from posenc_jax._digest import content_digest
from posenc_jax.data import task_names
from posenc_jax.data.eval_sets import (
    build_eval_set,
    eval_set_batches,
    eval_set_config,
    open_eval_set,
)
from posenc_jax.data.task import pad_batch
from posenc_jax.train import (
    LoopConfig,
    OptimizerConfig,
    RunSpec,
    evaluate,
    train,
)
from posenc_jax.train.checkpoint import Checkpointer
from posenc_jax.train.decode import evaluate_greedy
from posenc_jax.train.distributed import (
    barrier,
    is_main_process,
    join_job,
    main_process_first,
    stop_job_on_error,
)
from posenc_jax.train.evaluate import check_eval_lengths
from posenc_jax.train.loop import run_identity
from posenc_jax.train.sharding import make_mesh

_CONFIG = config_flags.DEFINE_config_file(
    "config", "experiments/configs/quick.py", "Study preset (a Python config file)."
)
_WORKDIR = flags.DEFINE_string(
    "workdir", "runs/quick", "Directory for results, plots and checkpoints."
)

EVAL_KEY_SEED = 20240601  # one evaluation set for every encoding: identical examples


def eval_lengths(cfg: ConfigDict) -> list[int]:
    """N times each multiplier, and every length from N to ``eval_every_length_to`` N."""
    if cfg.train_length <= 0:
        raise ValueError(f"train_length must be positive, got {cfg.train_length}.")
    if not cfg.eval_multipliers or min(cfg.eval_multipliers) < 1:
        raise ValueError(
            f"eval_multipliers={list(cfg.eval_multipliers)}: evaluation lengths must be at least "
            "the train length (multipliers >= 1)."
        )
    for name in ("eval_every_length_to", "eval_pad_to"):
        multiple = cfg[name]
        if not (isinstance(multiple, int) and multiple >= 0):
            raise ValueError(
                f"{name}={multiple!r}; give a multiple of N (2: up to 2N) or 0 for none."
            )
    lengths = {cfg.train_length * m for m in cfg.eval_multipliers}
    lengths |= set(range(cfg.train_length, cfg.train_length * cfg.eval_every_length_to + 1))
    return sorted(lengths)


def padded_length(cfg: ConfigDict, length: int) -> int:
    """The task length whose width the evaluation batches of ``length`` are padded to.

    The lengths from N to ``eval_pad_to`` N share the widest one's width, so a single
    compiled program scores them all (padded examples score as unpadded ones:
    tests/test_padding.py); longer lengths keep their own. Padding trades compilations
    for computation on padding: worth it for small models, not for long sequences.
    """
    top = cfg.train_length * cfg.eval_pad_to
    return top if length <= top else length


def greedy_at(cfg: ConfigDict, length: int) -> bool:
    """Whether greedy decoding scores ``length``: with ``greedy_decoding``, up to
    ``greedy_decoding_to`` N (0: every length)."""
    top = cfg.greedy_decoding_to
    if not (isinstance(top, int) and top >= 0):
        raise ValueError(
            f"greedy_decoding_to={top!r}; give a multiple of N (2: the NoPE score's (N, 2N]) "
            "or 0 for every length."
        )
    return bool(cfg.greedy_decoding) and (top == 0 or length <= top * cfg.train_length)


def min_train_length(cfg: ConfigDict) -> int | None:
    """The run's shortest training length, None for the single-length protocol."""
    shortest = cfg.min_train_length
    if not (isinstance(shortest, int) and 1 <= shortest <= cfg.train_length):
        raise ValueError(
            f"min_train_length={shortest!r}; give an integer in 1..train_length="
            f"{cfg.train_length} (1: every length up to N; train_length: only N)."
        )
    return None if shortest == cfg.train_length else shortest


def registered_name(name: str, cfg: ConfigDict) -> str:
    """The registry name behind a study encoding name: itself, a declared variant, or the
    model-wide encoding of a layer schedule (``encoding_schedules``; NoPE by default)."""
    if name in cfg.encoding_schedules:
        return cfg.encoding_schedules[name].get("encoding", "nope")
    return cfg.encoding_variants.get(name, name)


def schedule_layers(name: str, cfg: ConfigDict):
    """The layer specs of a study encoding that is a layer schedule, else None.

    ``encoding_schedules[name]`` holds ``schedule`` (a name of
    ``posenc_jax.models.schedules``), optionally ``encoding`` (the model-wide encoding that
    chooses positions and embeds; "nope" by default) and the schedule's own arguments.
    """
    if name not in cfg.encoding_schedules:
        return None
    entry = dict(cfg.encoding_schedules[name])
    entry.pop("encoding", None)
    schedule = entry.pop("schedule", None)
    if schedule is None:
        raise ValueError(f"encoding_schedules[{name!r}] needs a 'schedule' name.")
    return pj.models.schedules.get_schedule(schedule, cfg.model.num_layers, **entry)


def build_encoding(
    name: str, cfg: ConfigDict, longest_sequence: int, train_sequence: int
) -> tuple[pj.encodings.PositionalEncoding, dict]:
    """The encoding of a study row, with the sizes it depends on filled in.

    An encoding with a ``max_length`` hyperparameter (a learned table) gets one row per
    position of the longest evaluation sequence unless the config says otherwise: the
    rows beyond the training length are never trained, which is exactly what the study
    measures. One with a ``train_length`` (FoPE's L_train) gets the longest training
    sequence, in tokens.
    """
    registered = registered_name(name, cfg)
    kwargs = dict(cfg.encoding_kwargs.get(name, {}))
    accepted = pj.encodings.hyperparameters(pj.encodings.get_class(registered))
    if "max_length" in accepted:
        kwargs.setdefault("max_length", longest_sequence)
    if "train_length" in accepted:
        kwargs.setdefault("train_length", train_sequence)
    return pj.encodings.get(registered, **kwargs), kwargs


def cell_spec(cfg: ConfigDict, task_name: str, encoding_name: str) -> tuple[RunSpec, dict]:
    task = study_task(cfg, task_name)
    longest = task.sequence_length(max(eval_lengths(cfg)))
    encoding, encoding_kwargs = build_encoding(
        encoding_name, cfg, longest, task.sequence_length(cfg.train_length)
    )
    model = pj.models.TransformerConfig(
        vocab_size=task.vocab_size,
        architecture=task.architecture,
        d_model=cfg.model.d_model,
        num_layers=cfg.model.num_layers,
        num_heads=cfg.model.num_heads,
        num_kv_heads=cfg.model.num_kv_heads or None,
        mlp_dim=cfg.model.mlp_dim,
        encoding=encoding,
        layers=schedule_layers(encoding_name, cfg),
        dtype=cfg.model.dtype,
    )
    optimizer = OptimizerConfig(**cfg.optimizer.to_dict())
    spec = RunSpec(
        model=model,
        task=task,
        train_length=cfg.train_length,
        batch_size=cfg.batch_size,
        optimizer=optimizer,
        min_train_length=min_train_length(cfg),
    )
    return spec, encoding_kwargs


def inapplicable(cfg: ConfigDict, task_name: str, encoding_name: str) -> str | None:
    """Why a (task, encoding) cell cannot run, or None: an encoding that reads positions
    the task assigns (Abacus, position coupling) on a task that assigns none."""
    task = study_task(cfg, task_name)
    # Sizes do not change a capability.
    encoding = build_encoding(encoding_name, cfg, longest_sequence=1, train_sequence=1)[0]
    if encoding.needs_task_positions and not task.gives_task_positions:
        return f"{encoding_name} reads positions the task assigns, and {task_name} assigns none"
    return None


def validate(cfg: ConfigDict) -> None:
    """Fails before any training on names or sizes that cannot work."""
    for name in cfg.encodings:
        pj.encodings.get_class(registered_name(name, cfg))
    unknown = [t for t in cfg.tasks if t not in task_names()]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; valid tasks: {', '.join(task_names())}.")
    if not cfg.seeds:
        raise ValueError("seeds is empty; give at least one seed.")
    for name in ("seeds", "encodings", "tasks"):
        values = list(cfg[name])
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            raise ValueError(f"{name} repeats {repeated}; each must appear once.")
    if cfg.batch_size <= 0 or cfg.eval_examples <= 0 or cfg.eval_batch_size <= 0:
        raise ValueError(
            f"batch_size ({cfg.batch_size}), eval_examples ({cfg.eval_examples}) and "
            f"eval_batch_size ({cfg.eval_batch_size}) must be positive."
        )
    lengths = eval_lengths(cfg)
    for task, encoding in study_cells(cfg):
        spec, _ = cell_spec(cfg, task, encoding)  # every cell's run spec builds
        if is_language_model(spec.task):
            check_lm_cell(cfg, spec, lengths, f"{task}/{encoding}")
    for task, encoding in traced_cells(cfg, lengths):
        check_eval_lengths(cell_spec(cfg, task, encoding)[0], lengths)


def traced_cells(cfg: ConfigDict, lengths: list[int]) -> list[tuple[str, str]]:
    """The cells whose model :func:`validate` traces at the longest evaluation length.

    Each task with its first encoding, and each encoding with the tasks whose evaluation
    batches are the widest of their architecture (in the inputs, and in the source of an
    encoder-decoder), among the cells the study runs (:func:`study_cells`): a table, a
    position limit or a causal-only encoding that cannot serve a task fails there first.
    Tracing every cell took minutes for the full preset (364 cells, about 0.5 s each on a
    2-core CPU).
    """
    widths = {}  # task -> {(architecture, input name): width}
    for task_name in cfg.tasks:
        task = study_task(cfg, task_name)
        # A corpus task without held-out text, or too little of it, fails here.
        held_out = task.held_out()
        batch = jax.eval_shape(
            lambda k, t=held_out: t.sample(k, 1, max(lengths)), jax.random.key(0)
        )
        widths[task_name] = {
            (task.architecture, name): batch[name].shape[1]
            for name in ("inputs", "source")
            if name in batch
        }
    first = {}  # task -> its first encoding
    widest = {}  # (encoding, architecture, input name) -> (width, task)
    for task_name, encoding in study_cells(cfg):
        first.setdefault(task_name, encoding)
        for (architecture, name), width in widths[task_name].items():
            best = widest.get((encoding, architecture, name))
            if best is None or width > best[0]:
                widest[(encoding, architecture, name)] = (width, task_name)
    cells = set(first.items())
    cells |= {(task_name, key[0]) for key, (_, task_name) in widest.items()}
    return sorted(cells)


def run_study(cfg: ConfigDict, workdir: str, *, progress: bool = True) -> str:
    """Runs every unfinished (task, encoding) cell; returns the Markdown table.

    In a job of several processes every process calls it alike; process 0 writes every
    file and returns the table, the others return an empty string. With
    ``cfg.cell_shard`` (``i/n``) only that shard's cells run, into the shard's own
    results file; the table is then of those cells and no ``table.md`` is written (the
    merge writes it).

    Raises:
      WorkDirInUseError: another study holds the lock of the results file this one
        would write (process 0 takes it; the others write nothing).
      DamagedResultsError: a line of the results file is not a whole row.
      ResultsNotWrittenError: rows could not be written (a full disk); the file is as it
        was, and a re-run computes the missing rows.
    """
    shard = parse_cell_shard(cfg.cell_shard)
    # Process 0 first: a corpus named by TFDS is written once, then read by the others.
    with main_process_first("study configuration checked"):
        validate(cfg)
    check_writable_dir(workdir, "work dir (--workdir)")
    results_name = shard.results_name if shard else RESULTS_FILE
    lock = study_lock(workdir, results_name) if is_main_process() else contextlib.nullcontext()
    with lock:
        return _run_unfinished_cells(cfg, workdir, shard, results_name, progress=progress)


def _run_unfinished_cells(
    cfg: ConfigDict, workdir: str, shard, results_name: str, *, progress: bool
) -> str:
    results = ResultsFile(workdir, results_name)
    if shard is None:
        check_shards_merged(workdir, results)
    lengths = eval_lengths(cfg)
    results.check_study(study_settings_digest(cfg))
    other_code = results.other_provenance(provenance())
    if other_code and is_main_process():
        logging.warning(
            "%s holds rows written by other code (%s; this is %s@%s): a fix made between "
            "them would not show in those rows.",
            results.path,
            ", ".join(other_code),
            provenance()["package_version"],
            provenance()["git_commit"] or "no commit",
        )
    if results.unchecked_rows() and is_main_process():
        logging.warning(
            "%d rows of %s carry no configuration digest (written by an older version); "
            "they are taken as this configuration's without a check.",
            results.unchecked_rows(),
            results.path,
        )
    for task_name in cfg.tasks:
        for encoding_name in cfg.encodings:
            reason = inapplicable(cfg, task_name, encoding_name)
            if reason:
                logging.warning("cell %s/%s skipped: %s.", task_name, encoding_name, reason)
    pending = []  # (task, encoding, the seeds that lack a row)
    for task_name, encoding_name in study_cells(cfg, shard):
        digest = cell_config_digest(cfg, task_name, encoding_name)
        results.check_config(encoding_name, task_name, digest)
        seeds = results.missing_seeds(encoding_name, task_name, cfg.seeds, lengths)
        if seeds:
            pending.append((task_name, encoding_name, seeds))
    # An interrupted cell's checkpoints must be this configuration's; checked before any
    # cell trains, so a mismatch stops the study before it has written anything.
    for task_name, encoding_name, seeds in pending:
        checkpoints = os.path.join(
            cell_dir(workdir, task_name, encoding_name, seeds), "checkpoints"
        )
        if os.path.isdir(checkpoints):
            spec = cell_spec(cfg, task_name, encoding_name)[0]
            checker = Checkpointer(checkpoints, every=1, run=run_identity(spec, seeds))
            try:
                checker.check_run()
            finally:
                checker.close()
    write_eval_sets(cfg, sorted({task for task, _, _ in pending}), lengths, workdir)
    mesh = make_mesh()  # every device of the job
    bar = tqdm(
        total=len(pending) * cfg.optimizer.total_steps,
        unit="step",
        disable=not progress,
        desc="study",
        dynamic_ncols=True,
    )
    overheads = []  # each finished cell's time outside its steps, in its steps
    for done, (task_name, encoding_name, seeds) in enumerate(pending, start=1):
        bar.set_postfix_str(f"{task_name}/{encoding_name}")
        done_before = bar.n
        start = time.perf_counter()
        rows = run_cell(
            cfg,
            task_name,
            encoding_name,
            workdir,
            lengths,
            seeds=seeds,
            on_step=lambda step, base=done_before: bar.update(base + step - bar.n),
            mesh=mesh,
        )
        if is_main_process():
            results.add(results.without_present(rows))
        # The bar counts compilation and evaluation too, so its ETA is the study's: each
        # cell adds the mean overhead of the finished ones to the work still to come.
        overheads.append(overhead_in_steps(rows, time.perf_counter() - start, cfg))
        steps = cfg.optimizer.total_steps
        mean = sum(overheads) / len(overheads)
        finished = done * steps + sum(overheads)
        bar.total = round(finished + (len(pending) - done) * (steps + mean))
        bar.update(round(finished) - bar.n)
    bar.close()
    table = ""
    if is_main_process():
        if shard is None:
            table = write_table_and_plots(cfg, results.rows(), workdir)
        else:
            rows, left_out = configured_rows(
                results.rows(), cfg.encodings, cfg.tasks, cfg.seeds, lengths
            )
            table = markdown_table(rows, encodings_order=list(cfg.encodings), left_out=left_out)
    barrier("study written")
    return table


def write_table_and_plots(cfg: ConfigDict, rows: list[dict], workdir: str) -> str:
    """Writes ``table.md`` and ``plots/`` of this configuration's rows; returns the table."""
    rows, left_out = configured_rows(rows, cfg.encodings, cfg.tasks, cfg.seeds, eval_lengths(cfg))
    table = markdown_table(rows, encodings_order=list(cfg.encodings), left_out=left_out)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table)
    extrapolation_plots(rows, os.path.join(workdir, "plots"))
    return table


def study_cells(cfg: ConfigDict, shard: CellShard | None = None) -> list[tuple[str, str]]:
    """The (task, encoding) cells the study runs (each task, then each encoding), every
    pair but the inapplicable ones (:func:`inapplicable`), or those of one cell shard."""
    cells = [
        (task, encoding)
        for task in cfg.tasks
        for encoding in cfg.encodings
        if inapplicable(cfg, task, encoding) is None
    ]
    return cells if shard is None else shard.cells(cells)


def check_shards_merged(workdir: str, results: ResultsFile) -> None:
    """Refuses to run every cell in a work dir whose cell shards hold rows results.jsonl
    lacks: their cells would be trained again and their rows never merged."""
    if not shard_files(workdir):
        return
    _, unmerged = merge_shard_rows(workdir)
    if unmerged:
        raise ValueError(
            f"{workdir} holds {unmerged} row(s) of cell shards (results-shard-*.jsonl) that "
            f"{results.path} lacks: merge them first (python -m experiments.merge_shards "
            "with this --config and --workdir), or run this study with --config.cell_shard."
        )


def write_eval_sets(cfg: ConfigDict, task_names: list[str], lengths: list[int], workdir: str):
    """Process 0 writes the evaluation set of every (task, length) the cells will read (of
    the algorithmic tasks; a language model reads its corpus); the others wait for it."""
    if is_main_process():
        for task_name in task_names:
            task = study_task(cfg, task_name)
            if is_language_model(task):
                continue
            for length in lengths:
                build_eval_set(
                    task.held_out(),
                    length,
                    num_examples=cfg.eval_examples,
                    seed=EVAL_KEY_SEED,
                    data_dir=eval_sets_dir(workdir),
                )
    barrier("evaluation sets written")


#: Config keys that choose cells or only change how a study runs, not what a row means.
_NOT_STUDY_SETTINGS = (
    "cell_shard",
    "checkpoint_every",
    "compilation_cache_dir",
    "distributed",
    "encoding_kwargs",
    "encoding_schedules",
    "encoding_variants",
    "encodings",
    "eval_every_length_to",
    "eval_multipliers",
    "eval_pad_to",
    "lm",
    "log_every",
    "seeds",
    "start_fresh_if_unusable",
    "task_kwargs",
    "tasks",
)


def study_settings_digest(cfg: ConfigDict) -> str:
    """SHA-256 of the settings every cell shares (model, optimizer, train length, batch,
    evaluation examples and decoding): one work dir holds one value of it."""
    settings = {k: v for k, v in cfg.to_dict().items() if k not in _NOT_STUDY_SETTINGS}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def cell_dir(workdir: str, task_name: str, encoding_name: str, seeds) -> str:
    """Where a group of seeds of one cell is trained: ``seeds-0-1-2``, or for long groups
    ``seeds-<first>-to-<last>-n<count>-<digest>`` (file names stop at 255 characters)."""
    seeds = [int(s) for s in seeds]
    group = "seeds-" + "-".join(str(s) for s in seeds)
    if len(group) > 100:
        digest = hashlib.sha256(group.encode()).hexdigest()[:12]
        group = f"seeds-{seeds[0]}-to-{seeds[-1]}-n{len(seeds)}-{digest}"
    return os.path.join(workdir, "cells", task_name, encoding_name, group)


def cell_config_digest(cfg: ConfigDict, task_name: str, encoding_name: str) -> str:
    """SHA-256 of what a cell's rows depend on: its run spec and the evaluation settings."""
    spec, _ = cell_spec(cfg, task_name, encoding_name)
    # The batch size sets which positions a randomized encoding samples at evaluation.
    evaluation = {
        "eval_examples": cfg.eval_examples,
        "eval_batch_size": cfg.eval_batch_size,
        "greedy_decoding": bool(cfg.greedy_decoding),
        "greedy_decoding_to": cfg.greedy_decoding_to,
        "eval_key_seed": EVAL_KEY_SEED,
    }
    if is_language_model(spec.task):
        evaluation["lm"] = lm_evaluation_settings(cfg)
    digest = hashlib.sha256(content_digest(spec).encode())
    digest.update(json.dumps(evaluation, sort_keys=True).encode())
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _stored_batches(task, length, num_examples, batch_size, width, data_dir) -> tuple:
    """The padded batches of one stored evaluation set, read once per process."""
    # Every encoding reads the same stored examples: a TFDS evaluation set per length,
    # written before the cells train (write_eval_sets).
    config = eval_set_config(task, length, num_examples=num_examples, seed=EVAL_KEY_SEED)
    source = open_eval_set(config, data_dir)
    return tuple(pad_batch(batch, width) for batch in eval_set_batches(source, batch_size))


def eval_sets_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "eval_sets")


def eval_batches(cfg: ConfigDict, task, length: int, workdir: str) -> tuple:
    """The evaluation batches of ``task`` at ``length``, padded to their group's width
    (:func:`padded_length`); every cell of the task reads the same ones."""
    width = task.sequence_length(padded_length(cfg, length))
    return _stored_batches(
        task.held_out(),
        length,
        cfg.eval_examples,
        cfg.eval_batch_size,
        width,
        eval_sets_dir(workdir),
    )


def overhead_in_steps(rows: list[dict], cell_seconds: float, cfg: ConfigDict) -> float:
    """A finished cell's time outside its training steps (compilation, evaluation, greedy
    decoding), in steps at the cell's own step rate; 0 when it trained no step."""
    steps_seconds = rows[0]["steps_seconds"] if rows else 0.0
    if steps_seconds <= 0:
        return 0.0
    return max(cell_seconds - steps_seconds, 0.0) * cfg.optimizer.total_steps / steps_seconds


def accuracy_metrics(cfg, spec, params, length, key, workdir) -> list[dict]:
    """Teacher-forced accuracies of every seed at ``length`` on the stored evaluation set,
    with greedy decoding's where the config asks for it."""
    batches = eval_batches(cfg, spec.task, length, workdir)
    per_seed = evaluate(spec, params, batches, key=key, length=length)
    if greedy_at(cfg, length) and spec.model.architecture != "encoder":
        greedy = evaluate_greedy(spec, params, batches, key=key)
        if greedy is not None:
            per_seed = [{**m, **g} for m, g in zip(per_seed, greedy, strict=True)]
    return per_seed


def run_cell(
    cfg, task_name, encoding_name, workdir, lengths, *, seeds=None, on_step=None, mesh=None
) -> list[dict]:
    """Trains the given seeds (default: all) of one (task, encoding) cell together, on
    ``mesh`` (None: the default device), and evaluates every length."""
    seeds = list(cfg.seeds if seeds is None else seeds)
    spec, encoding_kwargs = cell_spec(cfg, task_name, encoding_name)
    digest = cell_config_digest(cfg, task_name, encoding_name)
    study_digest = study_settings_digest(cfg)
    first_step = []  # when the first step was dispatched: compile time before, steps after

    def stepped(step):
        if not first_step:
            first_step.append(time.perf_counter())
        if on_step:
            on_step(step)

    start = time.perf_counter()
    state, history = train(
        spec,
        seeds,
        loop=LoopConfig(
            log_every=cfg.log_every,
            checkpoint_every=cfg.checkpoint_every,
            start_fresh_if_unusable=cfg.start_fresh_if_unusable,
        ),
        workdir=cell_dir(workdir, task_name, encoding_name, seeds),
        on_step=stepped,
        mesh=mesh,
    )
    end = time.perf_counter()
    train_seconds = end - start
    # The steps alone (a resumed cell with nothing left to train has none).
    steps_seconds = end - first_step[0] if first_step else 0.0
    positions_key = jax.random.key(EVAL_KEY_SEED)
    rows = []
    for length in lengths:
        key = jax.random.fold_in(positions_key, length)
        eval_start = time.perf_counter()
        if is_language_model(spec.task):
            per_seed = lm_metrics(cfg, spec, state.params, length, key)
        else:
            per_seed = accuracy_metrics(cfg, spec, state.params, length, key, workdir)
        eval_seconds = time.perf_counter() - eval_start
        for seed, metrics in zip(seeds, per_seed, strict=True):
            rows.append(
                {
                    "encoding": encoding_name,
                    "registered_encoding": registered_name(encoding_name, cfg),
                    "task": task_name,
                    "seed": int(seed),
                    "train_length": cfg.train_length,
                    "min_train_length": cfg.min_train_length,
                    "eval_length": length,
                    "encoding_kwargs": json.loads(json.dumps(encoding_kwargs, default=str)),
                    "steps": cfg.optimizer.total_steps,
                    "config_sha256": digest,
                    "study_sha256": study_digest,
                    "final_train_loss": history[-1]["loss"][seeds.index(seed)] if history else None,
                    # Wall time of the cell's training (with compilation), of its steps
                    # after the first, and of this length's evaluation (all its seeds).
                    "train_seconds": round(train_seconds, 2),
                    "steps_seconds": round(steps_seconds, 2),
                    "eval_seconds": round(eval_seconds, 2),
                    **provenance(),
                    **metrics,
                }
            )
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    cfg, workdir = _CONFIG.value, _WORKDIR.value
    use_compilation_cache(cfg.compilation_cache_dir)
    join_study_job(cfg)
    if is_main_process():
        report_small_pages()
    with stop_job_on_error():
        table = run_study(cfg, workdir, progress=is_main_process())
    if is_main_process():
        print(table)
        shard = parse_cell_shard(cfg.cell_shard)
        print(f"results: {os.path.join(workdir, shard.results_name if shard else 'results.jsonl')}")
        if shard is None:
            print(f"plots:   {os.path.join(workdir, 'plots')}/")
    sys.stdout.flush()


def use_compilation_cache(directory: str) -> None:
    """Keeps the study's compiled programs in ``directory`` (JAX's persistent compilation
    cache, keyed by the program, the compiler options and the JAX version), unless the
    environment already names a cache or ``directory`` is empty."""
    if not directory or jax.config.jax_compilation_cache_dir:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))


def join_study_job(cfg: ConfigDict) -> bool:
    """Joins the multi-host job ``cfg.distributed`` describes (or JAX detects); True when
    this process is one of several."""
    job = cfg.distributed
    return join_job(
        job.coordinator_address or None,
        job.num_processes,
        job.process_id,
        heartbeat_timeout=job.heartbeat_timeout,
        initialization_timeout=job.initialization_timeout,
    )


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with config errors that name the bad value and the valid ones."""
    presets = sorted(
        os.path.relpath(path)
        for path in glob.glob(os.path.join(os.path.dirname(__file__), "configs", "*.py"))
        if not os.path.basename(path).startswith("_") and os.path.basename(path) != "base.py"
    )
    try:
        args = app.parse_flags_with_usage(argv)
        _CONFIG.value.keys()  # the preset loads lazily; touch it so a bad --config fails here
    except (AttributeError, KeyError) as error:
        # An override such as --config.not_a_key=3 names a key no preset defines.
        name = str(error).strip("\"'")
        keys = ", ".join(sorted(base_config.get_config().keys()))
        _exit_with(f"--config override names no config key: {name!r}. Top-level keys: {keys}.")
    except OSError as error:
        _exit_with(f"--config could not be loaded: {error}\nValid presets: {', '.join(presets)}.")
    return args


def _exit_with(message: str) -> None:
    sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
    sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
