"""Figures that answer the classic questions about position in attention, in one command.

Command (``make figures``):
  python -m experiments.figures --out figures/ [--study_dir runs/quick] [--skip_trained]

Writes into ``--out`` (numbers are printed as they are computed):

  fig1_permutation.png     attention without position is permutation-equivariant
  fig2_naive_positions.png why not the normalized position i/(L-1) or the integer i
  fig3_sinusoidal.png      the sinusoidal encoding and the binary-counter analogy
  fig4_relative_shift.png  PE(t + k) = M_k PE(t): least squares against the closed form
  fig5_dot_products.png    PE(i) . PE(j) depends on |i - j| only and decays
  fig6_rope_decay.png      RoPE's long-term decay across frequency schedules
  fig7_bias_shapes.png     b_h(i, j) against distance for the relative biases
  fig7b_decay_maps.png     one example's c_i - c_j for the content-dependent decays (FoX, Cable)
  fig8_attention_maps.png  attention maps of a small trained encoder-decoder
  extrapolation/*.png      accuracy against evaluation length, from --study_dir

Figures 1-6 are analytic (seconds on a CPU). Figure 7 shows the biases at initialization
and, when a trained model is available, after training: from the study's checkpoints in
``--study_dir`` (a study run with ``--config.checkpoint_every``) or else from small copy
models trained here for ``--train_steps`` steps; figure 7b the decays' map of one example,
after as many steps (at initialization with ``--skip_trained``). Figure 8 trains a small
encoder-decoder on string reversal. ``--skip_trained`` skips every training (figure 8 is
then not written). The extrapolation curves and the study panel of figure 2 need
``--study_dir``.
"""

import dataclasses
import glob
import io
import os
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import posenc_jax as pj  # noqa: E402
from experiments.plots import extrapolation_plots  # noqa: E402
from experiments.results import ResultsFile, summarize  # noqa: E402
from posenc_jax import analysis  # noqa: E402
from posenc_jax.data import Task, get_task  # noqa: E402
from posenc_jax.train import LoopConfig, OptimizerConfig, RunSpec, train  # noqa: E402

_OUT = flags.DEFINE_string("out", "figures", "Directory the PNGs are written to.")
_STUDY_DIR = flags.DEFINE_string(
    "study_dir", None, "Work dir of a length-extrapolation study (results.jsonl, checkpoints)."
)
_SKIP_TRAINED = flags.DEFINE_bool(
    "skip_trained", False, "Skip the figures that train a model (7 trained row, 8)."
)
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 300, "Steps of each small model trained here.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of every random initialization and training run.")
_DPI = flags.DEFINE_integer("dpi", 100, "Resolution of the PNGs.")

ENCODING_DIM = 128  # the width of the encodings drawn (Vaswani et al. use 512)
BIAS_ENCODINGS = ("alibi", "t5", "kerple_log", "kerple_power", "sandwich", "fire")
LEARNED_BIAS_ENCODINGS = ("t5", "kerple_log", "kerple_power", "fire")
DECAY_ENCODINGS = ("fox", "cable")
NAIVE_ENCODINGS = ("sinusoidal", "normalized", "integer")


def _save(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    # A 256-colour palette looks the same for these plots at a third of the file size, so
    # the PNGs can be committed and shown in the README.
    Image.open(buffer).convert("RGB").quantize(colors=256).save(path, optimize=True)
    print(f"wrote {path}")
    return path


# 1 ------------------------------------------------------------------------------------------


def figure_permutation(out_dir: str, seed: int) -> str:
    """f(Px) beside P f(x) for an encoder without and with position."""
    length = 10
    cases = [
        ("nope", {}),
        ("sinusoidal", {}),
        ("learned", {"max_length": length}),
        ("rope", {}),
    ]
    fig, axes = plt.subplots(len(cases), 2, figsize=(6.4, 8.4), sharex=True, sharey=True)
    for row, (name, kwargs) in enumerate(cases):
        result = analysis.permutation_test(
            pj.encodings.get(name, **kwargs), length=length, vocab_size=24, seed=seed
        )
        print(f"[1] {name}: max |f(Px) - P f(x)| = {result.max_error:.2e}")
        scale = np.max(np.abs(result.permuted_outputs))
        for col, (matrix, title) in enumerate(
            ((result.outputs_of_permuted, "f(P x)"), (result.permuted_outputs, "P f(x)"))
        ):
            ax = axes[row, col]
            ax.imshow(matrix, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
            ax.set_title(f"{name}: {title}", fontsize=9)
            if col == 0:
                ax.set_ylabel("token")
        axes[row, 1].text(
            1.02,
            0.5,
            f"max error\n{result.max_error:.1e}",
            transform=axes[row, 1].transAxes,
            fontsize=8,
            va="center",
        )
    for ax in axes[-1]:
        ax.set_xlabel("output feature")
    fig.suptitle(
        "Permuting the input tokens of an encoder: without position (nope) the outputs are\n"
        "the same vectors permuted; with sinusoidal, learned or RoPE they are not",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out_dir, "fig1_permutation.png")


# 2 ------------------------------------------------------------------------------------------


def _study_rows(study_dir: str | None) -> list[dict]:
    if not study_dir:
        return []
    results = ResultsFile(study_dir)
    if not os.path.exists(results.path):
        raise ValueError(f"--study_dir={study_dir!r} holds no results.jsonl; run the study first.")
    return results.rows()


def figure_naive_positions(out_dir: str, rows: list[dict]) -> str:
    """Normalized position changes meaning with length; integer position is unbounded."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    lengths = np.arange(4, 65)
    normalized = analysis.neighbour_step(pj.functional.normalized_positions, lengths)
    integer = analysis.neighbour_step(pj.functional.integer_positions, lengths)
    ax = axes[0]
    ax.plot(lengths, normalized, label="normalized i/(L-1)")
    ax.plot(lengths, integer, label="integer i")
    ax.set_yscale("log")
    ax.set_xlabel("sentence length L")
    ax.set_ylabel("encoding of 'one step apart'")
    ax.set_title("(a) the same offset, different values", fontsize=9)
    ax.legend(fontsize=8)
    print(
        f"[2] one step apart, normalized: {normalized[0]:.3f} at L=4, {normalized[-1]:.4f} at L=64"
    )

    positions = np.arange(0, 2049, 16)
    # A random direction of norm about 1 (1.007 at seed 0), so the integer encoding's norm
    # is about the position itself.
    integer_norms = analysis.position_norms(
        pj.encodings.get("integer", stddev=ENCODING_DIM**-0.5), positions, ENCODING_DIM
    )
    sinusoidal_norms = analysis.position_norms(
        pj.encodings.get("sinusoidal"), positions, ENCODING_DIM
    )
    ax = axes[1]
    ax.plot(positions, integer_norms, label="integer i (direction of norm ~1)")
    ax.plot(positions, sinusoidal_norms, label=f"sinusoidal, D={ENCODING_DIM}")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("position")
    ax.set_ylabel("norm of the position vector")
    ax.set_title("(b) integer grows without bound; sinusoid stays sqrt(D/2)", fontsize=9)
    ax.legend(fontsize=8)
    print(
        f"[2] norm at position 2048: integer {integer_norms[-1]:.0f}, "
        f"sinusoidal {sinusoidal_norms[-1]:.3f} (sqrt(D/2) = {np.sqrt(ENCODING_DIM / 2):.3f})"
    )

    ax = axes[2]
    summary = summarize(rows, "sequence_accuracy") if rows else {}
    tasks = [t for t in sorted(summary) if any(e in summary[t] for e in NAIVE_ENCODINGS)]
    if tasks:
        task = tasks[0]
        train_length = next(r["train_length"] for r in rows if r["task"] == task)
        for encoding in NAIVE_ENCODINGS:
            if encoding not in summary[task]:
                continue
            by_length = summary[task][encoding]
            lengths_seen = sorted(by_length)
            ax.plot(
                lengths_seen, [by_length[n][0] for n in lengths_seen], marker="o", label=encoding
            )
        ax.axvline(train_length, color="gray", linestyle="--", label="train length")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("evaluation length")
        ax.set_ylabel("exact match")
        ax.legend(fontsize=8)
        ax.set_title(f"(c) the study: {task}", fontsize=9)
    else:
        ax.axis("off")
        ax.text(
            0.0,
            0.5,
            "(c) the study's rows for these encodings:\n"
            "python -m experiments.length_extrapolation \\\n"
            "  --config experiments/configs/quick.py --workdir runs/quick\n"
            "then: python -m experiments.figures --study_dir runs/quick",
            fontsize=8,
            family="monospace",
            va="center",
        )
    fig.suptitle("Why not the normalized position or the integer position", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "fig2_naive_positions.png")


# 3 ------------------------------------------------------------------------------------------


def figure_sinusoidal(out_dir: str) -> str:
    """Heatmap of the encoding, and the binary-counter analogy."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2.2, 0.6, 1.4]})
    table = np.asarray(pj.functional.sinusoidal(jnp.arange(50), ENCODING_DIM))
    image = axes[0].imshow(table, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    axes[0].set_xlabel("dimension (even: sin, odd: cos; frequency falls left to right)")
    axes[0].set_ylabel("position")
    axes[0].set_title(f"(a) sinusoidal encoding, D = {ENCODING_DIM}, positions 0..49", fontsize=9)
    fig.colorbar(image, ax=axes[0], fraction=0.04)

    bits = analysis.binary_counter(16, 4)
    axes[1].imshow(bits, cmap="Greys", aspect="auto")
    axes[1].set_xticks(range(4), [f"bit {b}" for b in range(4)], rotation=90, fontsize=7)
    axes[1].set_ylabel("number")
    axes[1].set_title("(b) 0..15 in binary,\nlowest bit first", fontsize=9)

    channels = np.asarray(pj.functional.sinusoidal(jnp.arange(16), ENCODING_DIM))[:, :16]
    axes[2].imshow(channels, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    axes[2].set_xticks(range(0, 16, 2))
    axes[2].set_xlabel("dimension 0..15 (highest frequency first)")
    axes[2].set_ylabel("position")
    axes[2].set_title("(c) the same positions, first sinusoid channels", fontsize=9)
    fig.suptitle(
        "Like the bits of a counter, each channel pair oscillates at its own rate, the\n"
        "fastest first; unlike bits, the waves are smooth and a shift is a rotation",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out_dir, "fig3_sinusoidal.png")


# 4 ------------------------------------------------------------------------------------------


def figure_relative_shift(out_dir: str) -> str:
    """PE(t + k) = M_k PE(t): the fitted map against the closed-form rotation."""
    offsets = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89]
    fit = analysis.fit_shift_maps(ENCODING_DIM, offsets, num_positions=256)
    per_offset = np.max(np.abs(fit.fitted - fit.closed_form), axis=(1, 2))
    print(
        f"[4] M_k least squares vs closed form: max error {fit.fit_error:.2e}; "
        f"max |PE(t+k) - M_k PE(t)| over t < 256, k <= 89: {fit.residual:.2e}"
    )
    shown, corner = offsets.index(5), 12
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.9))
    for ax, matrix, title in (
        (axes[0], fit.fitted[shown, :corner, :corner], "(a) M_5 by least squares"),
        (axes[1], fit.closed_form[shown, :corner, :corner], "(b) M_5 closed form"),
    ):
        ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"{title} (first {corner} dims)", fontsize=9)
        ax.set_xlabel("input dimension")
        ax.set_ylabel("output dimension")
    axes[2].semilogy(offsets, per_offset, marker="o")
    axes[2].set_xlabel("offset k")
    axes[2].set_ylabel("max |fitted - closed form|")
    axes[2].set_title("(c) fit error per offset", fontsize=9)
    fig.suptitle(
        "For every offset k one block-diagonal rotation M_k maps PE(t) to PE(t + k) for all t; "
        f"max error {fit.fit_error:.1e} (fit), {fit.residual:.1e} (identity, float32)",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out_dir, "fig4_relative_shift.png")


# 5 ------------------------------------------------------------------------------------------


def figure_dot_products(out_dir: str) -> str:
    """All-pairs dot products and their profile against distance."""
    positions = np.arange(100)
    products = analysis.position_dot_products(positions, ENCODING_DIM)
    distances = np.arange(0, 401)
    profile = analysis.dot_product_profile(distances, ENCODING_DIM)
    print(
        f"[5] PE.PE: asymmetry {np.max(np.abs(products - products.T)):.1e}, "
        f"diagonal {products[0, 0]:.2f}, rises after falling at "
        f"{int(np.sum(np.diff(profile) > 0))} of {distances.size - 1} distances"
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    image = axes[0].imshow(products, cmap="viridis")
    axes[0].set_xlabel("position j")
    axes[0].set_ylabel("position i")
    axes[0].set_title("(a) PE(i) . PE(j): symmetric, constant along diagonals", fontsize=9)
    fig.colorbar(image, ax=axes[0], fraction=0.046)
    axes[1].plot(distances, profile)
    axes[1].set_xlabel("distance |i - j|")
    axes[1].set_ylabel("PE(i) . PE(j)")
    axes[1].set_title("(b) decays with distance, not monotonically", fontsize=9)
    fig.suptitle(f"Dot products of sinusoidal position vectors, D = {ENCODING_DIM}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "fig5_dot_products.png")


# 6 ------------------------------------------------------------------------------------------


def _decay_schedules(head_dim: int) -> dict[str, dict[str, np.ndarray]]:
    """Frequency schedules: the standard one, alternatives, and the scaled ones."""
    f = pj.functional

    def inv_freq(**kwargs):
        return np.asarray(f.rope_inv_freq(head_dim, **kwargs)[0])

    standard = inv_freq()
    return {
        "alternatives": {
            "10000^(-2t/d) (RoPE)": standard,
            "500000^(-2t/d) (Llama 3)": inv_freq(base=500000.0),
            "2t/d (linear; period 2 pi d/2)": np.arange(head_dim // 2) / (head_dim // 2),
        },
        "scaled": {
            "RoPE": standard,
            "PI x4": inv_freq(scaling=f.LinearScaling(4.0)),
            "NTK-aware x4": inv_freq(scaling=f.NTKScaling(4.0)),
            "YaRN x4 (L0 2048)": inv_freq(
                scaling=f.YaRNScaling(factor=4.0, original_max_position_embeddings=2048)
            ),
            "Llama 3.1 (500000, x8)": inv_freq(base=500000.0, scaling=f.Llama3Scaling()),
        },
    }


def figure_rope_decay(out_dir: str) -> str:
    """Su's long-term decay for several frequency schedules."""
    head_dim = 128
    schedules = _decay_schedules(head_dim)
    distances = np.arange(0, 2049)
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.6))
    for ax, group, title in (
        (axes[0, 0], "alternatives", "(a) |mean_t exp(i m theta_t)|, d = 128"),
        (axes[0, 1], "scaled", "(b) the same for the RoPE scaling methods"),
    ):
        for label, inv_freq in schedules[group].items():
            ax.plot(
                distances[1:], analysis.rope_decay(distances[1:], inv_freq), lw=0.9, label=label
            )
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("relative distance m")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)

    continuous = {
        "10000^(-s)": lambda s: 10000.0**-s,
        "500000^(-s)": lambda s: 500000.0**-s,
        "s (linear)": lambda s: s,
    }
    m = np.linspace(0, 60, 1201)
    ax = axes[1, 0]
    for label, schedule in continuous.items():
        ax.plot(m, analysis.rope_decay_integral(m, schedule), label=f"theta(s) = {label}")
    for n in range(1, 10):
        ax.axvline(2 * np.pi * n, color="gray", lw=0.4, ls=":")
    ax.set_xlabel("relative distance m (dotted: 2 pi n)")
    ax.set_title("(c) integral form |int_0^1 exp(i m theta(s)) ds|", fontsize=9)
    ax.legend(fontsize=7)
    linear_zero = analysis.rope_decay_integral(np.array([2 * np.pi]), continuous["s (linear)"])[0]
    print(f"[6] theta(s) = s: |integral| at m = 2 pi is {linear_zero:.1e} (a zero)")

    ax = axes[1, 1]
    bound_distances = np.arange(0, 257)
    for label in ("10000^(-2t/d) (RoPE)", "500000^(-2t/d) (Llama 3)"):
        bound = analysis.rope_decay_bound(bound_distances, schedules["alternatives"][label])
        ax.plot(bound_distances, bound, label=label)
    ax.set_xlabel("relative distance m")
    ax.set_ylabel("(1/P) sum_j |S_j|")
    ax.set_title("(d) Su's relative upper bound (RoFormer, Figure 2)", fontsize=9)
    ax.legend(fontsize=7)
    standard = schedules["alternatives"]["10000^(-2t/d) (RoPE)"]
    decay = analysis.rope_decay(np.array([0, 10, 100, 1000]), standard)
    print(f"[6] RoPE decay at m = 0, 10, 100, 1000: {np.round(decay, 3).tolist()}")
    fig.suptitle(
        "Long-term decay of RoPE (Su et al. 2021, Section 3.4.3): geometric frequencies decay;\n"
        "linearly spaced ones oscillate and return to zero",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, out_dir, "fig6_rope_decay.png")


# Trained models ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceReversal(Task):
    """Encoder-decoder string reversal: the source is ``x``, the target ``x`` reversed.

    The registered "reverse" task is posed for a decoder-only model; this one feeds the
    string to an encoder, so that all three kinds of attention have something to show.

    Tokens: 0 padding, 1 begin-of-sequence, ``2 ..`` symbols. The decoder reads
    ``BOS y[:-1]`` and predicts ``y = reversed(x)``, so its cross-attention must look up
    source position ``n - 1 - t`` at step t: an anti-diagonal map when it has learned.
    """

    architecture = "encoder_decoder"
    registry_name = "source_reversal"
    alphabet_size: int = 8

    @property
    def vocab_size(self) -> int:
        return self.alphabet_size + 2

    def sequence_length(self, length: int) -> int:
        return length

    def sample(self, key, batch_size: int, length: int):
        self.check_size(batch_size, length)
        source = jax.random.randint(key, (batch_size, length), 2, self.vocab_size, jnp.int32)
        targets = source[:, ::-1]
        begin = jnp.ones((batch_size, 1), jnp.int32)
        return {
            "source": source,
            "inputs": jnp.concatenate([begin, targets[:, :-1]], axis=1),
            "targets": targets,
            "weights": jnp.ones((batch_size, length), jnp.float32),
        }


def _small_model(task: Task, encoding) -> pj.models.TransformerConfig:
    """The configuration of the small models the figures train."""
    return pj.models.TransformerConfig(
        vocab_size=task.vocab_size,
        architecture=task.architecture,
        d_model=32,
        num_layers=2,
        num_heads=4,
        mlp_dim=64,
        encoding=encoding,
    )


def _train_small(task: Task, encoding, *, steps: int, seed: int, train_length: int):
    """A small model trained on ``task``; returns its config, parameters and final loss."""
    model = _small_model(task, encoding)
    spec = RunSpec(
        model=model,
        task=task,
        train_length=train_length,
        batch_size=32,
        optimizer=OptimizerConfig(
            learning_rate=3e-3, total_steps=steps, warmup_steps=min(20, steps // 4)
        ),
    )
    state, history = train(spec, [seed], loop=LoopConfig(log_every=max(steps, 1)))
    params = jax.tree.map(lambda a: a[0], state.params)
    return model, params, float(history[-1]["loss"][0])


def _study_bias_params(study_dir: str, encoding: str) -> tuple[dict, int, bool, str] | None:
    """Layer-0 bias parameters of the first seed of a study cell with checkpoints, if any."""
    for directory in sorted(
        glob.glob(os.path.join(study_dir, "cells", "*", encoding, "seeds-*", "checkpoints"))
    ):
        manager = ocp.CheckpointManager(os.path.abspath(directory))
        try:
            step = manager.latest_step()
            if step is None:
                continue
            # A checkpoint holds the state and its fingerprint; only the state is read.
            state = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore())
            ).state
        finally:
            manager.close()
        first_seed = jax.tree.map(lambda a: np.asarray(a)[0], state["params"])
        stack = "decoder" if "decoder" in first_seed else "encoder"
        attention = first_seed[stack]["layer_0"]["self_attention"]
        num_heads = attention["query"]["kernel"].shape[-2]
        task = directory.split(os.sep)[-4]
        label = f"trained in the study\n({task}, {step} steps)"
        return attention.get("position_encoding", {}), num_heads, stack == "decoder", label
    return None


def _trained_bias_models(study_dir, train_steps, seed) -> dict[str, tuple]:
    """{encoding: (params, num_heads, causal, label)} from the study, or trained here."""
    trained = {}
    for name in LEARNED_BIAS_ENCODINGS:
        found = _study_bias_params(study_dir, name) if study_dir else None
        if found is None and train_steps > 0:
            task = get_task("copy")
            model, params, loss = _train_small(
                task, pj.encodings.get(name), steps=train_steps, seed=seed, train_length=8
            )
            attention = params["decoder"]["layer_0"]["self_attention"]
            label = f"trained here\n(copy, N = 8, {train_steps} steps, loss {loss:.2f})"
            found = (attention["position_encoding"], model.num_heads, True, label)
            print(f"[7] {name}: {' '.join(label.split())}")
        if found is not None:
            trained[name] = found
    return trained


# 7 ------------------------------------------------------------------------------------------


def figure_bias_shapes(out_dir: str, trained: dict[str, tuple]) -> str:
    """b_h(i, j) against distance, at initialization and (when available) trained."""
    distances = np.arange(0, 65)
    rows = 2 if trained else 1
    fig, axes = plt.subplots(
        rows, len(BIAS_ENCODINGS), figsize=(16, 3.3 * rows + 0.6), squeeze=False
    )
    for col, name in enumerate(BIAS_ENCODINGS):
        ax = axes[0, col]
        profile = analysis.bias_profile(pj.encodings.get(name), distances, num_heads=8)
        for head, values in enumerate(profile):
            ax.plot(distances, values, lw=1, color=plt.cm.viridis(head / 8))
        ax.set_title(f"{name}, initialization (8 heads)", fontsize=8)
        ax.set_xlabel("distance i - j")
        if col == 0:
            ax.set_ylabel("b_h(i, j)")
        if not trained:
            continue
        ax = axes[1, col]
        if name not in trained:
            ax.axis("off")
            ax.text(
                0.5,
                0.5,
                "no parameters:\nsame after training"
                if name not in LEARNED_BIAS_ENCODINGS
                else "no trained model",
                ha="center",
                fontsize=8,
            )
            continue
        params, num_heads, causal, label = trained[name]
        distances_trained = np.arange(0, 33)
        profile = analysis.bias_profile(
            pj.encodings.get(name),
            distances_trained,
            num_heads=num_heads,
            causal=causal,
            params=params,
        )
        for head, values in enumerate(profile):
            ax.plot(distances_trained, values, lw=1, color=plt.cm.viridis(head / num_heads))
        ax.set_title(f"{name}, {label}", fontsize=7)
        ax.set_xlabel("distance i - j")
    if trained:
        title = "Relative biases against distance: at initialization (top) and trained (bottom)"
    else:
        title = (
            "Relative biases against distance, at initialization only (no trained model: give "
            "--study_dir with checkpoints, or run without --skip_trained)"
        )
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "fig7_bias_shapes.png")


def figure_decay_maps(out_dir: str, train_steps: int, seed: int) -> str:
    """One example's ``c_i - c_j`` of the content-dependent decays (FoX, Cable), layer 0.

    Their bias depends on the tokens between key and query, so it has no profile against
    distance (figure 7): this is the map of one copy example, per head, at initialization
    or after ``train_steps`` steps of training on copy.
    """
    task, length = get_task("copy"), 8
    tokens = task.sample(jax.random.key(seed + 1), 1, length)["inputs"]
    fig, axes = plt.subplots(
        len(DECAY_ENCODINGS), 4, figsize=(11, 2.9 * len(DECAY_ENCODINGS) + 0.5), squeeze=False
    )
    for row, name in enumerate(DECAY_ENCODINGS):
        encoding = pj.encodings.get(name)
        if train_steps:
            model, params, loss = _train_small(
                task, encoding, steps=train_steps, seed=seed, train_length=length
            )
            label = f"trained on copy, {train_steps} steps, loss {loss:.2f}"
        else:
            model = _small_model(task, encoding)
            params = pj.models.Transformer(model).init(jax.random.key(seed), tokens)["params"]
            label = "at initialization"
        _, records = analysis.attention_weights(model, params, tokens, return_records=True)
        log_decay = np.asarray(records["decoder/layer_0/self_attention"]["decay"])
        bias = analysis.decay_bias_map(log_decay)[0]  # [H, L, L]
        per_head = " ".join(f"{v:.3f}" for v in log_decay[0].mean(-1))
        print(f"[7b] {name} ({label}): mean log decay per token, per head: {per_head}")
        for head in range(model.num_heads):
            ax = axes[row, head]
            image = ax.imshow(bias[head], cmap="viridis")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
            ax.set_title(f"{name}, head {head}\n({label})", fontsize=7)
            ax.set_xlabel("key j", fontsize=7)
            ax.set_ylabel("query i", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(
        "Content-dependent decays: one copy example's bias c_i - c_j (layer 0; blank: keys "
        "after the query). It depends on the tokens between j and i, not on i - j alone",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out_dir, "fig7b_decay_maps.png")


# 8 ------------------------------------------------------------------------------------------


def figure_attention_maps(out_dir: str, train_steps: int, seed: int) -> str:
    """Encoder self-, causal decoder self- and cross-attention of a trained reverser."""
    task, length = SourceReversal(), 10
    model, params, loss = _train_small(
        task, pj.encodings.get("sinusoidal"), steps=train_steps, seed=seed, train_length=length
    )
    print(f"[8] reverse, sinusoidal encoder-decoder: final training loss {loss:.3f}")
    example = task.sample(jax.random.key(seed + 1), 1, length)
    weights = analysis.attention_weights(model, params, example["inputs"], source=example["source"])
    # The first layer: there the cross-attention of a trained reverser is a clean lookup.
    panels = [
        ("encoder/layer_0/self_attention", "encoder self-attention"),
        ("decoder/layer_0/self_attention", "decoder self-attention (causal)"),
        ("decoder/layer_0/cross_attention", "cross-attention"),
    ]
    cross = weights["decoder/layer_0/cross_attention"][0]
    anti_diagonal = np.sum(cross * np.fliplr(np.eye(length)), axis=(-2, -1)) / length
    print(f"[8] cross-attention weight on the anti-diagonal, per head: {anti_diagonal.round(2)}")
    fig, axes = plt.subplots(len(panels), model.num_heads, figsize=(2.3 * model.num_heads, 7.2))
    for row, (path, title) in enumerate(panels):
        for head in range(model.num_heads):
            ax = axes[row, head]
            ax.imshow(weights[path][0, head], cmap="Greys", vmin=0, vmax=1)
            ax.set_title(f"{title}\nhead {head}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel("query position")
    fig.suptitle(
        "Attention maps (layer 0) of a small encoder-decoder trained to reverse strings of "
        f"length {length} ({train_steps} steps, loss {loss:.2f}); columns are keys",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out_dir, "fig8_attention_maps.png")


# ---------------------------------------------------------------------------------------------


def write_figures(
    out_dir: str,
    *,
    study_dir: str | None = None,
    skip_trained: bool = False,
    train_steps: int = 300,
    seed: int = 0,
    dpi: int = 100,
) -> list[str]:
    """Writes every figure into ``out_dir``; returns the paths written."""
    if train_steps < 0:
        raise ValueError(f"train_steps must be >= 0, got {train_steps}.")
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}.")
    with plt.rc_context({"savefig.dpi": dpi}):
        return _write_figures(out_dir, study_dir, skip_trained, train_steps, seed)


def _write_figures(out_dir, study_dir, skip_trained, train_steps, seed) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    rows = _study_rows(study_dir)
    paths = [
        figure_permutation(out_dir, seed),
        figure_naive_positions(out_dir, rows),
        figure_sinusoidal(out_dir),
        figure_relative_shift(out_dir),
        figure_dot_products(out_dir),
        figure_rope_decay(out_dir),
    ]
    steps = 0 if skip_trained else train_steps
    trained = _trained_bias_models(study_dir, steps, seed) if (study_dir or steps) else {}
    paths.append(figure_bias_shapes(out_dir, trained))
    paths.append(figure_decay_maps(out_dir, steps, seed))
    if steps:
        paths.append(figure_attention_maps(out_dir, steps, seed))
    else:
        print("[8] skipped: attention maps need a trained model (drop --skip_trained)")
    if rows:
        curves = os.path.join(out_dir, "extrapolation")
        for path in extrapolation_plots(rows, curves, dpi=plt.rcParams["savefig.dpi"]):
            print(f"wrote {path}")
            paths.append(path)
    else:
        print("[9] skipped: extrapolation curves need --study_dir with a results.jsonl")
    return paths


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    write_figures(
        _OUT.value,
        study_dir=_STUDY_DIR.value,
        skip_trained=_SKIP_TRAINED.value,
        train_steps=_TRAIN_STEPS.value,
        seed=_SEED.value,
        dpi=_DPI.value,
    )
    sys.stdout.flush()


if __name__ == "__main__":
    app.run(main)
