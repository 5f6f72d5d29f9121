"""Accuracy (or, for a language model, bits per character) against evaluation length, one
line per encoding, seed spread shaded, the training lengths shaded in grey."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.results import summarize  # noqa: E402


def extrapolation_plots(rows: list[dict], out_dir: str, *, dpi: int = 110) -> list[str]:
    """Writes one PNG per task (and metric) into ``out_dir`` at ``dpi``; returns their paths.

    Language-model tasks (rows with ``bpc``) get :func:`lm_plots` instead.
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    train_lengths = {r["task"]: r["train_length"] for r in rows}
    shortest = {r["task"]: r.get("min_train_length", r["train_length"]) for r in rows}
    for metric, label in (
        ("sequence_accuracy", "exact match"),
        ("token_accuracy", "per-token accuracy"),
    ):
        summary = summarize(rows, metric)
        for task, by_encoding in sorted(summary.items()):
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for encoding, by_length in sorted(by_encoding.items()):
                lengths = sorted(by_length)
                mean = [by_length[n][0] for n in lengths]
                std = [by_length[n][1] for n in lengths]
                (line,) = ax.plot(lengths, mean, marker="o", label=encoding)
                ax.fill_between(
                    lengths,
                    [m - s for m, s in zip(mean, std, strict=True)],
                    [m + s for m, s in zip(mean, std, strict=True)],
                    color=line.get_color(),
                    alpha=0.15,
                )
            n = train_lengths[task]
            if shortest[task] < n:
                ax.axvspan(shortest[task], n, color="gray", alpha=0.2, label="train lengths")
            ax.axvline(n, color="gray", linestyle="--", label=f"N = {n}")
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("evaluation length")
            ax.set_ylabel(f"{label} (mean ± std over seeds)")
            ax.set_title(f"{task}: {label} vs length")
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            paths.append(_save(fig, out_dir, f"{task}_{metric}.png", dpi))
    return paths + lm_plots(rows, out_dir, dpi=dpi)


def lm_plots(rows: list[dict], out_dir: str, *, dpi: int = 110) -> list[str]:
    """Per language-model task: bits per character against evaluation length, one line per
    encoding (as Press et al. 2022, Figure 1; ``<task>_bpc.png``, and
    ``<task>_sliding_bpc.png`` when sliding windows were scored and
    ``<task>_streaming_bpc.png`` when windows were decoded with StreamingLLM's cache), and
    by position in the
    window, one panel per encoding and one line per evaluation length
    (``<task>_bpc_by_position.png``). Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for metric, label in (
        ("bpc", "non-overlapping windows"),
        ("sliding_bpc", "sliding windows"),
        ("streaming_bpc", "windows decoded with StreamingLLM's cache"),
    ):
        for task, by_encoding in sorted(summarize(rows, metric).items()):
            n = next(r["train_length"] for r in rows if r["task"] == task)
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for encoding, by_length in by_encoding.items():
                lengths = sorted(by_length)
                mean = np.array([by_length[x][0] for x in lengths])
                std = np.array([by_length[x][1] for x in lengths])
                (line,) = ax.plot(lengths, mean, marker="o", label=encoding)
                ax.fill_between(lengths, mean - std, mean + std, color=line.get_color(), alpha=0.15)
            ax.axvline(n, color="gray", linestyle="--", label=f"N = {n}")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("evaluation length (characters per window)")
            ax.set_ylabel("bits per character (mean ± std over seeds)")
            ax.set_title(f"{task}: held-out bits per character, {label}", fontsize=9)
            ax.legend(fontsize=7, ncol=2)
            fig.tight_layout()
            paths.append(_save(fig, out_dir, f"{task}_{metric}.png", dpi))
    for task in sorted(summarize(rows, "bpc")):
        paths.append(_position_plot([r for r in rows if r["task"] == task], out_dir, dpi))
    return paths


def _position_plot(rows: list[dict], out_dir: str, dpi: int) -> str:
    """Bits per character by window-position bucket, mean over seeds: one panel per
    encoding, one line per evaluation length, at each bucket's middle position."""
    task = rows[0]["task"]
    encodings = list(dict.fromkeys(r["encoding"] for r in rows))
    lengths = sorted({r["eval_length"] for r in rows})
    colors = plt.cm.viridis(np.linspace(0.0, 0.9, len(lengths)))
    fig, axes = plt.subplots(
        1, len(encodings), figsize=(2.6 * len(encodings) + 1.0, 3.4), sharey=True, squeeze=False
    )
    for ax, encoding in zip(axes[0], encodings, strict=True):
        for length, color in zip(lengths, colors, strict=True):
            cell = [r for r in rows if r["encoding"] == encoding and r["eval_length"] == length]
            if not cell:
                continue
            edges = np.asarray(cell[0]["bucket_edges"])
            middles = (edges[:-1] + edges[1:] + 1) / 2  # 1-based: characters read
            bpc = [
                np.mean(values) if values else np.nan
                for values in (
                    [r["bucket_bpc"][b] for r in cell if r["bucket_bpc"][b] is not None]
                    for b in range(len(middles))
                )
            ]
            ax.plot(middles, bpc, marker=".", color=color, label=f"L = {length}")
        ax.axvline(rows[0]["train_length"], color="gray", linestyle="--")
        ax.set_xscale("log", base=2)
        ax.set_title(encoding, fontsize=9)
        ax.set_xlabel("position in window (N dashed)")
    axes[0][0].set_ylabel("bits per character")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{task}: bits per character by position in the window", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, f"{task}_bpc_by_position.png", dpi)


def _save(fig, out_dir: str, name: str, dpi: int) -> str:
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
