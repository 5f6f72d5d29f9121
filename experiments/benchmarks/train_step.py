"""Training-step speed of the study's Transformer: tokens per second and model FLOPs utilization.

For each encoding family (none, embed, rotate, bias, contextual) and each shape, this
compiles the step the study itself runs (``posenc_jax.train.loop.compiled_step``: the
jit of the vmapped ``train_step``, here with one seed) and reports

* the compile time (lower + compile, timed separately from the steps),
* the best and median of ``--repeats`` step times (``block_until_ready`` after each),
* tokens per second, and model FLOPs utilization: the counted FLOPs of a step
  (``experiments.benchmarks.flops``, matmuls only, forward + backward) divided by the
  step time and by the matmul peak measured in this same process
  (``experiments.benchmarks.matmul_peak``, before and after the steps; the higher is
  used, which makes the utilization conservative),
* XLA's own FLOP count of the compiled step (``cost_analysis``) as a cross-check. It
  also counts elementwise work, and it counts the body of a loop once, so for chunked
  attention (a loop over tiles) it is a lower bound. Its "bytes accessed" estimate, over
  the bandwidth ``matmul_peak`` measures, is the step's memory floor.

Model: d_model 256, 4 layers, 8 heads, MLP 1024, 256-token vocabulary; the copy task
(alphabet of 254 symbols, so every vocabulary entry is used) gives the batches. Shapes:
(L 256, batch 16) and (L 1024, batch 4), both 4,096 tokens per step. Attention is the
package default ("auto": prefix blocks for causal attention up to 512 x 512 logits,
chunked beyond); at L 1024 every
encoding without a contextual term is also timed with ``implementation="dense"``, the
comparison behind the chunked path's causal block skipping. float32 on CPU; on GPU and
TPU the model computes in bfloat16 (parameters float32) and the peak is bfloat16's.

Command:
  .venv/bin/python -m experiments.benchmarks.train_step --out runs/benchmarks/train_step.json

Flags: ``--encodings nope,sinusoidal,rope,alibi,t5,fire,cope``, ``--shapes 256x16,1024x4``,
``--repeats 5``, ``--block-size`` (chunked tile edge; default the package's),
``--no-dense`` (skip the dense comparison), ``--smoke`` (tiny model, seconds).
"""

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp

import posenc_jax as pj
from experiments.benchmarks.flops import transformer_flops
from experiments.benchmarks.matmul_peak import measure_peak
from experiments.benchmarks.report import write_json
from posenc_jax.attention.router import choose_implementation
from posenc_jax.data import get_task
from posenc_jax.train import OptimizerConfig, RunSpec
from posenc_jax.train.loop import compiled_init, compiled_step, run_keys

MODEL = {"d_model": 256, "num_layers": 4, "num_heads": 8, "mlp_dim": 1024, "vocab_size": 256}
ENCODINGS = ("nope", "sinusoidal", "rope", "alibi", "t5", "fire", "cope")
SHAPES = ((256, 16), (1024, 4))
#: Targets on a 2-core CPU in float32 (see NOTES.md).
MFU_TARGET = 0.45
CHUNKED_SPEEDUP_TARGET = 1.5
#: The prefix of the custom calls of cuDNN's fused attention in a compiled program.
CUDNN_ATTENTION_CALL = "__cudnn$fmha"


def compute_dtype() -> str:
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def make_spec(
    encoding: str,
    length: int,
    batch: int,
    *,
    implementation: str = "auto",
    block_size: int | None = None,
    model: dict | None = None,
) -> RunSpec:
    """The study's run of ``encoding`` on the copy task with sequences of ``length`` tokens."""
    model = dict(MODEL if model is None else model)
    if length % 2:
        raise ValueError(f"length must be even (copy sequences are 2n tokens), got {length}.")
    config = pj.models.TransformerConfig(
        architecture="decoder",
        encoding=pj.encodings.get(encoding),
        dtype=compute_dtype(),
        attention_implementation=implementation,
        attention_block_size=block_size,
        **model,
    )
    return RunSpec(
        model=config,
        task=get_task("copy", alphabet_size=model["vocab_size"] - 2),
        train_length=length // 2,
        batch_size=batch,
        optimizer=OptimizerConfig(total_steps=1000, warmup_steps=10),
    )


def attention_route(spec: RunSpec, length: int, compiled_text: str) -> tuple[str, int | None]:
    """The attention core's path in this compiled step ("dense", "chunked", "prefix" or
    "cudnn") and the tile edge its FLOPs are counted with (None: all ``L^2`` pairs; the
    prefix path's query blocks over their key prefixes are the chunked path's visited
    tiles when the block divides L, as at every length this benchmark runs).

    cuDNN is read from the compiled program (its fused-attention custom calls). Its causal
    kernel skips the tiles above the diagonal (the study's positions are shared and
    increasing, see ``posenc_jax.attention.fused``) with a tile edge not known here, so
    its pairs are counted with edge 1, the triangle ``L (L + 1) / 2``: the least work any
    causal kernel does, which makes its utilization conservative.
    """
    if CUDNN_ATTENTION_CALL in compiled_text:
        return "cudnn", 1
    # Without a cuDNN call, the path is the one "auto" takes off the GPU.
    cfg = spec.model
    path, block = choose_implementation(
        cfg.attention_implementation,
        block_size=cfg.attention_block_size,
        q_len=length,
        k_len=length,
        has_contextual=type(cfg.encoding).needs_dense,
        batch=spec.batch_size,
        num_heads=cfg.num_heads,
        cudnn=False,
        causal=cfg.architecture == "decoder",
    )
    return path, block if path in ("chunked", "prefix") else None


def xla_cost(compiled) -> dict:
    """XLA's FLOP and bytes-accessed estimates of a compiled program (None where unknown)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        analysis = None
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    analysis = analysis or {}
    return {
        "xla_flops": float(analysis["flops"]) if "flops" in analysis else None,
        "xla_bytes": float(analysis["bytes accessed"]) if "bytes accessed" in analysis else None,
    }


def prepared_step(spec: RunSpec):
    """Compiles the study's step for one seed and runs it once (buffers, thread pools).

    Returns:
      ``(step, compiled, compile_s)``: ``step()`` runs one more training step on the
      carried state and returns its metrics once they are ready.
    """
    keys = run_keys([0])
    state = compiled_init(spec)(keys)
    start = time.perf_counter()
    compiled = compiled_step(spec).lower(state, keys).compile()
    compile_s = time.perf_counter() - start
    carried = {"state": state}

    def step():
        carried["state"], metrics = compiled(carried["state"], keys)
        return jax.block_until_ready((carried["state"], metrics))[1]

    step()
    return step, compiled, compile_s


def measure_step(spec: RunSpec, length: int, repeats: int) -> dict:
    """Compiles the study's step for one seed and times ``repeats`` steps."""
    step, compiled, compile_s = prepared_step(spec)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        metrics = step()
        times.append(time.perf_counter() - start)
    path, block = attention_route(spec, length, compiled.as_text())
    counted = transformer_flops(spec.model, spec.batch_size, length, block_size=block)
    best = min(times)
    return {
        "encoding": type(spec.model.encoding).registry_name,
        "length": length,
        "batch": spec.batch_size,
        "implementation": spec.model.attention_implementation,
        "attention_path": f"{path}/{block}" if path in ("chunked", "prefix") else path,
        "dtype": spec.model.dtype,
        "compile_s": compile_s,
        "step_best_s": best,
        "step_median_s": sorted(times)[len(times) // 2],
        "step_all_s": times,
        "tokens_per_s": spec.batch_size * length / best,
        "counted_flops": counted.train_step,
        "counted_attention_flops": 3 * counted.attention,
        "attention_pairs": counted.attention_pairs,
        **xla_cost(compiled),
        "loss": float(jnp.asarray(metrics["loss"]).reshape(-1)[0]),
        "load_average": os.getloadavg(),
    }


def table(rows: list[dict], peak: float) -> str:
    lines = [
        "| encoding | L x B | attention | compile (s) | step best / median (s) | tokens/s | "
        "MFU | counted GFLOP | XLA GFLOP | XLA GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        xla = "" if r["xla_flops"] is None else f"{r['xla_flops'] / 1e9:.1f}"
        xla_gb = "" if r["xla_bytes"] is None else f"{r['xla_bytes'] / 1e9:.1f}"
        mfu = r["counted_flops"] / r["step_best_s"] / peak
        lines.append(
            f"| {r['encoding']} | {r['length']} x {r['batch']} | {r['attention_path']} | "
            f"{r['compile_s']:.1f} | {r['step_best_s']:.3f} / {r['step_median_s']:.3f} | "
            f"{r['tokens_per_s']:.0f} | {mfu:.1%} | {r['counted_flops'] / 1e9:.1f} | {xla} | "
            f"{xla_gb} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict], peak: float, long: int) -> list[str]:
    """PASS/FAIL lines for the utilization, chunked-speedup and compile-time targets."""
    lines = []
    for r in rows:
        if (
            r["implementation"] == "auto"
            and r["encoding"] in ("rope", "alibi")
            and r["length"] < long
        ):
            mfu = r["counted_flops"] / r["step_best_s"] / peak
            ok = mfu >= MFU_TARGET
            lines.append(
                f"{'PASS' if ok else 'FAIL'} MFU {r['encoding']} L={r['length']}: {mfu:.1%} "
                f"(target >= {MFU_TARGET:.0%})"
            )
    by_key = {(r["encoding"], r["length"], r["implementation"]): r for r in rows}
    for (encoding, length, implementation), r in sorted(by_key.items()):
        dense = by_key.get((encoding, length, "dense"))
        if (
            implementation != "auto"
            or dense is None
            or not r["attention_path"].startswith("chunked")
        ):
            continue
        speedup = r["tokens_per_s"] / dense["tokens_per_s"]
        ok = speedup >= CHUNKED_SPEEDUP_TARGET
        lines.append(
            f"{'PASS' if ok else 'FAIL'} chunked/dense tokens/s {encoding} L={length}: "
            f"{speedup:.2f}x (target >= {CHUNKED_SPEEDUP_TARGET}x)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/train_step.json")
    parser.add_argument("--encodings", default=",".join(ENCODINGS))
    parser.add_argument("--shapes", default=",".join(f"{length}x{b}" for length, b in SHAPES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--no-dense", action="store_true", help="skip the dense comparison")
    parser.add_argument("--smoke", action="store_true", help="tiny model and shapes")
    args = parser.parse_args(argv)

    model = dict(MODEL)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    peak_sizes = (256, 512, 1024, 2048)
    if args.smoke:
        model.update(d_model=32, num_layers=1, num_heads=2, mlp_dim=64, vocab_size=16)
        shapes, args.repeats, peak_sizes = [(16, 2), (1024, 1)], 1, (64, 128)
    dtype = "float32" if compute_dtype() == "float32" else "bfloat16"
    peak_before = measure_peak(dtype, peak_sizes)
    longest = max(length for length, _ in shapes)

    runs = []
    for length, batch in shapes:
        for encoding in args.encodings.split(","):
            runs.append((encoding, length, batch, "auto"))
            needs_dense = type(pj.encodings.get(encoding)).needs_dense
            if length == longest and length * length > 512 * 512 and not args.no_dense:
                if not needs_dense:
                    runs.append((encoding, length, batch, "dense"))
    rows = []
    for encoding, length, batch, implementation in runs:
        spec = make_spec(
            encoding,
            length,
            batch,
            implementation=implementation,
            block_size=args.block_size if implementation != "dense" else None,
            model=model,
        )
        rows.append(measure_step(spec, length, args.repeats))
        print(json.dumps(rows[-1]), flush=True)
    peak_after = measure_peak(dtype, peak_sizes)
    peak = max(peak_before["peak_flops_per_s"], peak_after["peak_flops_per_s"])

    write_json(
        args.out,
        {
            "model": model,
            "peak_flops_per_s": peak,
            "peak_before": peak_before,
            "peak_after": peak_after,
            "rows": rows,
        },
    )
    print(
        f"matmul peak ({dtype}): {peak_before['peak_flops_per_s'] / 1e9:.1f} GFLOP/s before, "
        f"{peak_after['peak_flops_per_s'] / 1e9:.1f} after; using {peak / 1e9:.1f}"
    )
    print(table(rows, peak))
    print("\n".join(check_targets(rows, peak, longest)))


if __name__ == "__main__":
    main()
