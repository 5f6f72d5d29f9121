"""The study's language-model cells: the corpus from the config, bits per character by length.

A ``char_lm`` cell trains a decoder on windows of N characters of a corpus's training
text and evaluates it on the held-out text at every evaluation length L (N, 2N, 4N, ...):
the text is cut into non-overlapping windows of L characters, each character scored once
(Press et al. 2022's protocol for evaluating past the training length), and, with
``lm.sliding_stride``, also into sliding windows that start every ``sliding_stride``
characters, so that every scored character after the first window has at least
``L - sliding_stride`` characters of context. Each row holds the bits per character over
the whole held-out text and per equal-width bucket of window position
(``posenc_jax.train.lm_eval``): where in the window the loss grows.

The corpus is ``lm.corpus``: a local text file, ``python_docs`` (offline: the
documentation topics every CPython ships, ``posenc_jax.data.corpus.python_docs_text``) or
a TFDS name (``tiny_shakespeare``; ``lm1b`` with ``lm.validation_split="test"``), loaded
by ``posenc_jax.data.corpus.load_corpus``. ``task_kwargs["char_lm"]``, when given, builds
the task from its own arguments instead (text and a vocabulary, from Python).

References:
  Press, Smith & Lewis, "Train Short, Test Long: Attention with Linear Biases Enables Input
  Length Extrapolation", ICLR 2022 (Figure 1; Section 4 and Appendix B).
"""

import functools

from ml_collections import ConfigDict

from posenc_jax._checks import is_integer
from posenc_jax.data import Task, get_task
from posenc_jax.data.char_lm import CharLM
from posenc_jax.data.corpus import load_corpus
from posenc_jax.train import RunSpec, evaluate_lm_runs

LM_TASK = "char_lm"


def is_language_model(task: Task) -> bool:
    """Whether a cell's task is scored in bits per character over a held-out text."""
    return isinstance(task, CharLM)


def study_task(cfg: ConfigDict, task_name: str) -> Task:
    """The task of a study cell: from ``task_kwargs[task_name]`` when given, and for
    ``char_lm`` without them from the corpus ``cfg.lm`` names."""
    kwargs = dict(cfg.task_kwargs.get(task_name, {}))
    if task_name == LM_TASK:
        check_lm_settings(cfg)
    if task_name == LM_TASK and not kwargs:
        lm = cfg.lm
        return _corpus_task(
            lm.corpus,
            float(lm.validation_fraction),
            lm.validation_split,
            lm.data_dir,
            int(lm.eval_characters),
        )
    return get_task(task_name, **kwargs)


@functools.lru_cache(maxsize=8)
def _corpus_task(
    corpus: str, validation_fraction: float, validation_split: str, data_dir: str, eval_chars: int
) -> CharLM:
    """One task per corpus setting: every cell of a study shares its arrays."""
    loaded = load_corpus(
        corpus,
        data_dir or None,
        validation_fraction=validation_fraction,
        validation_split=validation_split,
    )
    held_out = loaded.validation[:eval_chars] if eval_chars else loaded.validation
    return CharLM(corpus=loaded.train, vocabulary=loaded.vocabulary, held_out_corpus=held_out)


def check_lm_settings(cfg: ConfigDict) -> None:
    """Fails before any training on ``lm`` settings that cannot work."""
    lm = cfg.lm
    if not (isinstance(lm.corpus, str) and lm.corpus):
        raise ValueError(
            f"lm.corpus={lm.corpus!r}; give a text file, 'python_docs' (offline) or a TFDS "
            "name such as 'tiny_shakespeare'."
        )
    if not (
        is_integer(lm.eval_characters) and (lm.eval_characters == 0 or lm.eval_characters >= 2)
    ):
        raise ValueError(
            f"lm.eval_characters={lm.eval_characters!r}; give the number of held-out "
            "characters to evaluate on (at least 2), or 0 for all of them."
        )
    if not (is_integer(lm.num_buckets) and 1 <= lm.num_buckets <= cfg.train_length):
        raise ValueError(
            f"lm.num_buckets={lm.num_buckets!r}; give an integer in 1..train_length="
            f"{cfg.train_length} (buckets of window position; the shortest window is N)."
        )
    if not (is_integer(lm.sliding_stride) and 0 <= lm.sliding_stride <= cfg.train_length):
        raise ValueError(
            f"lm.sliding_stride={lm.sliding_stride!r}; give 0 (non-overlapping windows only) "
            f"or a stride in 1..train_length={cfg.train_length} characters."
        )


def lm_evaluation_settings(cfg: ConfigDict) -> dict:
    """What an LM row's numbers depend on beyond the run spec (which holds the corpus)."""
    return {"num_buckets": int(cfg.lm.num_buckets), "sliding_stride": int(cfg.lm.sliding_stride)}


def corpus_name(cfg: ConfigDict) -> str:
    """The corpus a row's text came from, as the config names it."""
    return "task_kwargs" if cfg.task_kwargs.get(LM_TASK) else cfg.lm.corpus


def lm_metrics(cfg: ConfigDict, spec: RunSpec, params, length: int, key) -> list[dict]:
    """Bits per character of every seed on the held-out text in windows of ``length``.

    Returns:
      one dict per seed: ``bpc``, ``loss`` (nats), ``tokens`` (characters scored),
      ``windows`` and the ``bucket_*`` lists of ``lm_eval.bucket_metrics`` for
      non-overlapping windows; with ``lm.sliding_stride``, the same under ``sliding_``
      names for sliding windows; and the ``corpus``.
    """
    ids = spec.task.held_out().corpus
    evaluate = functools.partial(
        evaluate_lm_runs,
        spec,
        params,
        ids,
        key=key,
        window=length,
        batch_size=cfg.eval_batch_size,
        num_buckets=cfg.lm.num_buckets,
    )
    per_seed = evaluate()
    if cfg.lm.sliding_stride:
        sliding = evaluate(stride=cfg.lm.sliding_stride)
        per_seed = [
            {**plain, **{f"sliding_{k}": v for k, v in other.items() if k != "window"}}
            for plain, other in zip(per_seed, sliding, strict=True)
        ]
    return [{**metrics, "corpus": corpus_name(cfg)} for metrics in per_seed]
