"""Language-model evaluation: loss and bits per character by position in the window.

A corpus of ``M`` characters has ``M - 1`` next-character targets. ``lm_windows`` cuts it
into model-sized windows and marks, with the weights, which targets each window scores,
so that every target is scored exactly once:

* non-overlapping (``stride == window``, the default): consecutive chunks, the protocol of
  Press et al. (ALiBi) for evaluating past the training length;
* sliding (``stride < window``): windows start every ``stride`` characters and each scores
  only the targets its predecessor did not reach, so every target after the first window
  sees at least ``window - stride`` characters of context.

A final window aligned to the end of the corpus scores whatever targets the regular ones
left over. ``position_bucket_sums`` pools the cross-entropy of scored targets into
equal-width buckets of window position (how much context the model had); ``evaluate_lm``
runs a model over all windows and reports per-bucket loss (nats) and bits per character
(``bpc = nats / ln 2``), and ``evaluate_lm_runs`` does the same for every seed of a
trained run (a ``RunSpec`` and its stacked parameters) in one compiled program, reading
each window in one forward pass or, with StreamingLLM's cache, token by token.

References:
  Press, Smith & Lewis, "Train Short, Test Long: Attention with Linear Biases Enables Input
  Length Extrapolation", ICLR 2022, Section 4 and Appendix B (non-overlapping and sliding
  window evaluation).
  Xiao, Tian, Chen, Han, Lewis, "Efficient Streaming Language Models with Attention
  Sinks", ICLR 2024, arXiv 2309.17453 (the streaming cache).
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from posenc_jax.attention.cache import Streaming
from posenc_jax.data.task import Batch
from posenc_jax.train.decode import teacher_forced_logits
from posenc_jax.train.sharding import to_host
from posenc_jax.train.step import RunSpec, forward, init_state, model_positions, over_seeds
from posenc_jax.typing import Array


def lm_windows(ids, window: int, *, stride: int | None = None) -> Batch:
    """Every window an evaluation feeds the model, with weights scoring each target once.

    Args:
      ids: int ``[M]`` token ids of the evaluation text.
      window: characters the model reads at once (its ``T``).
      stride: characters between window starts; None or ``window`` for non-overlapping
        windows, smaller for sliding windows.

    Returns:
      numpy ``inputs``, ``targets`` (int32) and ``weights`` (float32), each ``[N, window]``;
      ``targets[k, t]`` is the character after ``inputs[k, t]`` in the text and
      ``weights[k, t]`` is 1 exactly for the targets window ``k`` scores.

    Raises:
      ValueError: if the text is shorter than ``window + 1`` characters or ``stride`` is
        not in ``1 .. window``.
    """
    ids = np.asarray(ids)
    stride = window if stride is None else stride
    if ids.ndim != 1:
        raise ValueError(f"lm_windows needs 1-D token ids, got shape {ids.shape}.")
    if window <= 0 or not 1 <= stride <= window:
        raise ValueError(
            f"lm_windows needs window >= 1 and 1 <= stride <= window; got window={window}, "
            f"stride={stride}."
        )
    num_targets = ids.size - 1
    if num_targets < window:
        raise ValueError(
            f"a window of {window} characters needs at least {window + 1} characters of text; "
            f"got {ids.size}."
        )
    starts = list(range(0, num_targets - window + 1, stride))
    if starts[-1] + window < num_targets:
        starts.append(num_targets - window)
    starts = np.asarray(starts)
    offsets = starts[:, None] + np.arange(window)
    # A target is scored by the first window that reaches it: past the previous window's end.
    previous_end = np.concatenate([[0], starts[:-1] + window])
    weights = offsets >= previous_end[:, None]
    return {
        "inputs": ids[offsets].astype(np.int32),
        "targets": ids[offsets + 1].astype(np.int32),
        "weights": weights.astype(np.float32),
    }


def position_bucket_sums(
    logits: Array, targets: Array, weights: Array, num_buckets: int
) -> dict[str, Array]:
    """Cross-entropy sums and counts of weighted targets by window-position bucket.

    Position ``t`` of a ``T``-long window falls in bucket ``floor(t * num_buckets / T)``,
    so bucket ``b`` covers positions ``ceil(b T / nb) .. ceil((b + 1) T / nb) - 1``.

    Args:
      logits: ``[B, T, V]``.
      targets: int ``[B, T]``.
      weights: ``[B, T]``; 1 where the target is scored.
      num_buckets: number of buckets, at most ``T``.

    Returns:
      ``loss_sum`` (nats) and ``tokens``, float32 ``[num_buckets]`` each, so several
      batches pool by addition.
    """
    length = targets.shape[1]
    if not 1 <= num_buckets <= length:
        raise ValueError(
            f"num_buckets must be in 1 .. {length} (the window length), got {num_buckets}."
        )
    weights = weights.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    bucket = jnp.arange(length) * num_buckets // length
    in_bucket = (bucket[:, None] == jnp.arange(num_buckets)[None, :]).astype(jnp.float32)
    return {
        "loss_sum": jnp.einsum("BT,BT,TN->N", losses, weights, in_bucket),
        "tokens": jnp.einsum("BT,TN->N", weights, in_bucket),
    }


def bucket_edges(window: int, num_buckets: int) -> list[int]:
    """First position of each bucket of ``position_bucket_sums``, then ``window``."""
    return [-(-b * window // num_buckets) for b in range(num_buckets + 1)]


def bucket_metrics(sums: dict, window: int) -> dict:
    """Loss and bits per character overall and per bucket, from pooled bucket sums.

    Args:
      sums: ``loss_sum`` and ``tokens`` ``[num_buckets]``, pooled over all windows.
      window: the window length the buckets divide.

    Returns:
      ``loss`` and ``bpc`` over every scored target, ``tokens``; and per bucket
      ``bucket_loss``, ``bucket_bpc`` (None for a bucket that scored nothing, as sliding
      windows leave the early positions of all but the first window unscored),
      ``bucket_tokens`` and ``bucket_edges``.

    Raises:
      ValueError: if no target was scored.
      FloatingPointError: if the loss is NaN or Inf (no such number is returned).
    """
    loss_sum = np.asarray(sums["loss_sum"], np.float64)
    tokens = np.asarray(sums["tokens"], np.float64)
    if tokens.sum() <= 0:
        raise ValueError("language-model evaluation scored no target character.")
    bucket_loss = [float(s / n) if n > 0 else None for s, n in zip(loss_sum, tokens, strict=True)]
    loss = float(loss_sum.sum() / tokens.sum())
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"language-model evaluation at window {window} gave a loss of {loss}: the "
            "model's outputs are not finite there, so no bits per character are reported."
        )
    return {
        "loss": loss,
        "bpc": loss / math.log(2),
        "tokens": int(tokens.sum()),
        "bucket_loss": bucket_loss,
        "bucket_bpc": [None if x is None else x / math.log(2) for x in bucket_loss],
        "bucket_tokens": [int(n) for n in tokens],
        "bucket_edges": bucket_edges(window, len(tokens)),
    }


def _pooled_window_sums(
    sums_fn: Callable[[Batch, int], dict], ids, window: int, stride: int | None, batch_size: int
) -> tuple[dict, int]:
    """Bucket sums of every window of ``ids``, pooled by addition, and the window count.

    ``sums_fn(batch, index)`` scores the ``index``-th batch of ``batch_size`` windows;
    the last batch is padded with unscored rows, so every batch has one shape.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    windows = lm_windows(ids, window, stride=stride)
    num_windows = windows["inputs"].shape[0]
    padded = -(-num_windows // batch_size) * batch_size
    windows = {k: np.pad(v, ((0, padded - num_windows), (0, 0))) for k, v in windows.items()}
    totals = None
    for index, start in enumerate(range(0, padded, batch_size)):
        sums = sums_fn({k: v[start : start + batch_size] for k, v in windows.items()}, index)
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return totals, num_windows


def evaluate_lm(
    logits_fn: Callable[[Array], Array],
    ids,
    *,
    window: int,
    stride: int | None = None,
    batch_size: int,
    num_buckets: int = 8,
) -> dict:
    """Loss and bits per character of a model over a whole text, by window position.

    Args:
      logits_fn: ``inputs [B, window] -> logits [B, window, V]``, the model with its
        parameters (and positions) closed over; it is jit-compiled once, since every batch
        is padded to ``batch_size`` with unscored rows.
      ids: int ``[M]`` token ids of the evaluation text.
      window: characters per window.
      stride: None (non-overlapping) or the sliding-window stride, see ``lm_windows``.
      batch_size: windows per call of ``logits_fn``.
      num_buckets: equal-width window-position buckets.

    Returns:
      ``bucket_metrics`` of all windows, plus ``window``, ``stride`` and ``windows``.
    """

    @jax.jit
    def batch_sums(batch):
        logits = logits_fn(batch["inputs"])
        return position_bucket_sums(logits, batch["targets"], batch["weights"], num_buckets)

    totals, num_windows = _pooled_window_sums(
        lambda batch, index: batch_sums(batch), ids, window, stride, batch_size
    )
    return {**bucket_metrics(totals, window), **_windowing(window, stride, num_windows)}


@functools.lru_cache(maxsize=128)
def _compiled_run_sums(spec: RunSpec, num_buckets: int, streaming: Streaming | None) -> Callable:
    decoding = None if streaming is None else _streaming_model(spec, streaming)

    def one_seed(params, batch, positions_key):
        positions = model_positions(spec.model, batch, positions_key)
        if decoding is None:
            logits = forward(spec.model, params, batch, positions)
        else:
            logits = teacher_forced_logits(
                decoding,
                params,
                batch["inputs"],
                positions["positions"],
                embed_positions=positions.get("embed_positions"),
            )
        return position_bucket_sums(logits, batch["targets"], batch["weights"], num_buckets)

    return jax.jit(over_seeds(one_seed, in_axes=(0, None, None)))


def evaluate_lm_runs(
    spec: RunSpec,
    params: Any,
    ids,
    *,
    key,
    window: int,
    stride: int | None = None,
    batch_size: int,
    num_buckets: int = 8,
    streaming: Streaming | None = None,
) -> list[dict]:
    """``evaluate_lm`` of every seed of a trained run, in one program compiled per window.

    With ``streaming``, each window is not read in one forward pass but decoded token by
    token with StreamingLLM's cache (:func:`~posenc_jax.train.decode.teacher_forced_logits`,
    each step fed the true character): a window's character ``t`` is predicted from the
    first ``streaming.sinks`` characters of its window and the ``streaming.recent`` latest
    (itself included), at positions counted inside the cache. A cache that holds a whole
    window scores it as the forward pass does. Decoding is sequential, ``window`` steps per
    batch.

    Args:
      spec: the run (its model and encoding).
      params: its parameters with a leading seed axis (``TrainState.params``).
      ids: int ``[M]`` token ids of the evaluation text.
      key: PRNG key of the positions an encoding samples (randomized encodings), folded
        with the batch index.
      window, stride, batch_size, num_buckets: as in :func:`evaluate_lm`.
      streaming: None (a forward pass per window) or a StreamingLLM cache.

    Returns:
      one :func:`evaluate_lm` result per seed, in the order of the seed axis.

    Raises:
      FloatingPointError: a seed's loss is NaN or Inf; the message names the seed index.
      ValueError: ``streaming`` for a model that cannot decode with it (a layer with a
        decay term or a window), when the program is traced.
    """
    fn = _compiled_run_sums(spec, num_buckets, streaming)
    totals, num_windows = _pooled_window_sums(
        lambda batch, index: fn(params, batch, jax.random.fold_in(key, index)),
        ids,
        window,
        stride,
        batch_size,
    )
    totals = to_host(totals)  # split over the seeds' devices, which may be other hosts'
    results = []
    for seed_index in range(totals["tokens"].shape[0]):
        try:
            metrics = bucket_metrics({k: v[seed_index] for k, v in totals.items()}, window)
        except FloatingPointError as error:
            raise FloatingPointError(f"{error} (seed index {seed_index})") from error
        results.append({**metrics, **_windowing(window, stride, num_windows)})
    return results


def check_streaming(spec: RunSpec, streaming: Streaming) -> None:
    """Fails now, before training, if the run's model cannot decode with ``streaming``.

    The token-by-token decoding of :func:`evaluate_lm_runs` is traced, without computing
    anything, on two tokens, so that the model's own checks fire: a layer with a window, or
    with an encoding's decay term (whose sum of log decays between a query and a key is
    undefined over evicted tokens), refuses a streaming cache.

    Raises:
      ValueError: the model's or the cache's error.
    """
    decoding = _streaming_model(spec, streaming)
    params = jax.eval_shape(lambda k: init_state(spec, k).params, jax.random.key(0))
    tokens = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    jax.eval_shape(functools.partial(teacher_forced_logits, decoding), params, tokens, tokens)


def _streaming_model(spec: RunSpec, streaming: Streaming):
    """The run's model, decoding with StreamingLLM's cache (its checks run here)."""
    return dataclasses.replace(spec.model, decode=True, streaming=streaming)


def _windowing(window: int, stride: int | None, num_windows: int) -> dict:
    return {
        "window": window,
        "stride": window if stride is None else stride,
        "windows": num_windows,
    }
