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

With ``lm.streaming_recent`` (StreamingLLM, Xiao et al. 2024), each row also holds, under
``streaming_`` names, the bits per character of the same non-overlapping windows of L
characters decoded token by token with a cache of each window's first
``lm.streaming_sinks`` characters and its ``lm.streaming_recent`` latest (teacher forced,
positions counted inside the cache, so none exceeds ``sinks + recent - 1 < N``). Decoding
is sequential, one step per character of a window, so this pass reads only the first
``lm.streaming_characters`` held-out characters: compare its numbers across lengths (with
``sinks + recent = N`` its value at N is the plain windows' on those characters), not with
the plain windows' over the whole text. A model whose layers cannot stream (an
encoding with a decay term, such as ``fox`` or ``cable``, or a layer with a window) is
refused before any training, the error naming the cell.

The corpus is ``lm.corpus``: a local text file, ``python_docs`` (offline: the
documentation topics every CPython ships, ``posenc_jax.data.corpus.python_docs_text``) or
a TFDS name (``tiny_shakespeare``; ``lm1b`` with ``lm.validation_split="test"``), loaded
by ``posenc_jax.data.corpus.load_corpus``. ``task_kwargs["char_lm"]``, when given, builds
the task from its own arguments instead (text and a vocabulary, from Python).

References:
  Press, Smith & Lewis, "Train Short, Test Long: Attention with Linear Biases Enables Input
  Length Extrapolation", ICLR 2022 (Figure 1; Section 4 and Appendix B).
  Xiao, Tian, Chen, Han, Lewis, "Efficient Streaming Language Models with Attention
  Sinks", ICLR 2024, arXiv 2309.17453 (Section 3.2: the cache and positions in it).
"""

import functools

from ml_collections import ConfigDict

from posenc_jax._checks import is_integer
from posenc_jax.attention import Streaming
from posenc_jax.data import Task, get_task
from posenc_jax.data.char_lm import CharLM
from posenc_jax.data.corpus import load_corpus
from posenc_jax.train import RunSpec, evaluate_lm_runs
from posenc_jax.train.lm_eval import check_streaming

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
    if not (is_integer(lm.streaming_recent) and lm.streaming_recent >= 0):
        raise ValueError(
            f"lm.streaming_recent={lm.streaming_recent!r}; give 0 (no streaming pass) or the "
            "number of latest characters StreamingLLM's cache keeps (an integer >= 1)."
        )
    if not (is_integer(lm.streaming_sinks) and lm.streaming_sinks >= 0):
        raise ValueError(
            f"lm.streaming_sinks={lm.streaming_sinks!r}; give the number of first characters "
            "StreamingLLM's cache keeps (an integer >= 0; 4 in the paper)."
        )
    if lm.streaming_recent and lm.streaming_sinks + lm.streaming_recent > cfg.train_length:
        raise ValueError(
            f"lm.streaming_sinks={lm.streaming_sinks} + lm.streaming_recent="
            f"{lm.streaming_recent} = {lm.streaming_sinks + lm.streaming_recent} cached "
            f"characters exceed train_length={cfg.train_length}: positions counted inside "
            "the cache would leave the trained range; keep sinks + recent <= train_length."
        )
    if not (
        is_integer(lm.streaming_characters)
        and (lm.streaming_characters == 0 or lm.streaming_characters >= 2)
    ):
        raise ValueError(
            f"lm.streaming_characters={lm.streaming_characters!r}; give the number of "
            "held-out characters the streaming pass decodes (at least 2), or 0 for all of "
            "them."
        )


def streaming_cache(cfg: ConfigDict) -> Streaming | None:
    """StreamingLLM's cache the LM rows are also scored with, or None (no streaming pass)."""
    lm = cfg.lm
    return (
        Streaming(int(lm.streaming_sinks), int(lm.streaming_recent))
        if lm.streaming_recent
        else None
    )


def check_lm_cell(cfg: ConfigDict, spec: RunSpec, lengths, cell: str) -> None:
    """Fails before any training if a language-model cell's streaming pass cannot run: too
    few characters for a window of the longest evaluation length, or a model that cannot
    decode with StreamingLLM's cache (the message names the cell)."""
    streaming = streaming_cache(cfg)
    if streaming is None:
        return
    characters, longest = int(cfg.lm.streaming_characters), int(max(lengths))
    if 0 < characters <= longest:
        raise ValueError(
            f"lm.streaming_characters={characters} is too few for one window of the longest "
            f"evaluation length {longest}; give at least {longest + 1}, or 0 for every "
            "held-out character."
        )
    try:
        check_streaming(spec, streaming)
    except ValueError as error:
        raise ValueError(
            f"lm.streaming_recent={streaming.recent} asks a StreamingLLM pass that cell {cell} "
            f"cannot decode: {error} Set lm.streaming_recent=0, or leave that encoding out."
        ) from error


def lm_evaluation_settings(cfg: ConfigDict) -> dict:
    """What an LM row's numbers depend on beyond the run spec (which holds the corpus); the
    streaming settings only when a streaming pass runs, so rows without one keep the
    digest they had before it existed."""
    lm = cfg.lm
    settings = {"num_buckets": int(lm.num_buckets), "sliding_stride": int(lm.sliding_stride)}
    if lm.streaming_recent:
        settings["streaming"] = {
            "sinks": int(lm.streaming_sinks),
            "recent": int(lm.streaming_recent),
            "characters": int(lm.streaming_characters),
        }
    return settings


def corpus_name(cfg: ConfigDict) -> str:
    """The corpus a row's text came from, as the config names it."""
    return "task_kwargs" if cfg.task_kwargs.get(LM_TASK) else cfg.lm.corpus


def lm_metrics(cfg: ConfigDict, spec: RunSpec, params, length: int, key) -> list[dict]:
    """Bits per character of every seed on the held-out text in windows of ``length``.

    Returns:
      one dict per seed: ``bpc``, ``loss`` (nats), ``tokens`` (characters scored),
      ``windows`` and the ``bucket_*`` lists of ``lm_eval.bucket_metrics`` for
      non-overlapping windows; with ``lm.sliding_stride``, the same under ``sliding_``
      names for sliding windows; with ``lm.streaming_recent``, the same under
      ``streaming_`` names for non-overlapping windows of the first
      ``lm.streaming_characters`` held-out characters decoded with StreamingLLM's cache,
      and ``streaming_sinks`` and ``streaming_recent``; and the ``corpus``.
    """
    ids = spec.task.held_out().corpus
    evaluate = functools.partial(
        evaluate_lm_runs,
        spec,
        params,
        key=key,
        window=length,
        batch_size=cfg.eval_batch_size,
        num_buckets=cfg.lm.num_buckets,
    )
    per_seed = evaluate(ids)
    if cfg.lm.sliding_stride:
        sliding = evaluate(ids, stride=cfg.lm.sliding_stride)
        per_seed = [
            {**plain, **{f"sliding_{k}": v for k, v in other.items() if k != "window"}}
            for plain, other in zip(per_seed, sliding, strict=True)
        ]
    streaming = streaming_cache(cfg)
    if streaming is not None:
        characters = int(cfg.lm.streaming_characters)
        streamed = evaluate(ids[:characters] if characters else ids, streaming=streaming)
        per_seed = [
            {
                **plain,
                **{f"streaming_{k}": v for k, v in other.items() if k not in ("window", "stride")},
                "streaming_sinks": streaming.sinks,
                "streaming_recent": streaming.recent,
            }
            for plain, other in zip(per_seed, streamed, strict=True)
        ]
    return [{**metrics, "corpus": corpus_name(cfg)} for metrics in per_seed]
