"""``python -m experiments.figures``: every analytic figure written in one CPU command."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ANALYTIC_FIGURES = [
    "fig1_permutation.png",
    "fig2_naive_positions.png",
    "fig3_sinusoidal.png",
    "fig4_relative_shift.png",
    "fig5_dot_products.png",
    "fig6_rope_decay.png",
    "fig7_bias_shapes.png",
    "fig7b_decay_maps.png",
]


def _study_rows() -> list[dict]:
    """Rows in the study's results.jsonl format: two encodings, two seeds, three lengths."""
    rows = []
    for encoding, accuracy in (("sinusoidal", 0.9), ("normalized", 0.4)):
        for seed in (0, 1):
            for eval_length in (4, 8, 16):
                value = accuracy * 4 / eval_length + 0.01 * seed
                rows.append(
                    {
                        "encoding": encoding,
                        "task": "copy",
                        "seed": seed,
                        "train_length": 4,
                        "eval_length": eval_length,
                        "token_accuracy": value,
                        "sequence_accuracy": value / 2,
                    }
                )
    return rows


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "experiments.figures", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_analytic_figures_and_extrapolation_curves_in_one_command(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    with open(study / "results.jsonl", "w") as f:
        for row in _study_rows():
            f.write(json.dumps(row) + "\n")
    out = tmp_path / "figures"
    result = _run(f"--out={out}", f"--study_dir={study}", "--skip_trained")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ANALYTIC_FIGURES:
        path = out / name
        assert path.is_file() and path.stat().st_size > 10_000, name
    for metric in ("sequence_accuracy", "token_accuracy"):
        curve = out / "extrapolation" / f"copy_{metric}.png"
        with Image.open(curve) as image:  # 6.4 x 4.2 inches at the default --dpi=100
            assert image.size == (640, 420), image.size
    assert not (out / "fig8_attention_maps.png").exists()  # needs training: skipped
    # The numbers the figures show are printed as they are computed.
    assert "[1] nope: max |f(Px) - P f(x)| = " in result.stdout
    assert "M_k least squares vs closed form" in result.stdout


def test_a_study_dir_without_results_is_a_clear_error(tmp_path):
    result = _run(f"--out={tmp_path / 'figures'}", f"--study_dir={tmp_path}", "--skip_trained")
    assert result.returncode != 0
    assert "holds no results.jsonl" in result.stderr


@pytest.mark.slow
def test_trained_figures_with_a_few_steps(tmp_path):
    out = tmp_path / "figures"
    result = _run(f"--out={out}", "--train_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in [*ANALYTIC_FIGURES, "fig8_attention_maps.png"]:
        assert (out / name).is_file(), name
    assert "[7] fire: trained here" in result.stdout
