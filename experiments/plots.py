"""Accuracy against evaluation length, one line per encoding, seed spread shaded, the
training lengths shaded in grey."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from experiments.results import summarize  # noqa: E402


def extrapolation_plots(rows: list[dict], out_dir: str, *, dpi: int = 110) -> list[str]:
    """Writes one PNG per task (and metric) into ``out_dir`` at ``dpi``; returns their paths."""
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
            path = os.path.join(out_dir, f"{task}_{metric}.png")
            fig.savefig(path, dpi=dpi)
            plt.close(fig)
            paths.append(path)
    return paths
