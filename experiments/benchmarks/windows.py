"""Sliding-window attention: a long windowed training step against a short full one.

A window of w keys should make attention cost O(L w): the chunked backend skips every tile
outside the window. This times the study's training step (``compiled_step``, one seed) of
the benchmark model (d_model 256, 4 layers, 8 heads, RoPE) in two shapes with the same
4,096 tokens per step, in one process:

* L 4,096, batch 1, every layer a causal sliding window of 256 keys (chunked backend);
* L 256, batch 16, full causal attention (dense backend, as "auto" picks it);

and reports tokens per second of each and their ratio (windowed / full): 1.0 means the
windowed step costs the same per token as full attention at the window's length.

Command (about two minutes on a 2-core CPU):
  .venv/bin/python -m experiments.benchmarks.windows --out runs/benchmarks/windows.json

Flags: ``--window 256``, ``--long 4096``, ``--short 256``, ``--repeats 5``, ``--block-size``
(the chunked tile edge; default the package's), ``--smoke`` (tiny model, seconds).
"""

import argparse
import dataclasses
import time

import jax

from experiments.benchmarks.report import write_json
from experiments.benchmarks.train_step import MODEL, make_spec
from posenc_jax.attention import Window
from posenc_jax.models import LayerSpec
from posenc_jax.train.loop import compiled_init, compiled_step, run_keys


def windowed(spec, window: int, block_size: int | None):
    """The spec with every layer a sliding window of ``window`` keys."""
    model = dataclasses.replace(
        spec.model,
        layers=(LayerSpec(window=Window(window)),) * spec.model.num_layers,
        attention_block_size=block_size,
    )
    return dataclasses.replace(spec, model=model)


def time_steps(spec, repeats: int) -> dict:
    """Compile time and the median step time of ``spec``'s training step (one seed)."""
    keys = run_keys([0])
    state = compiled_init(spec)(keys)
    step = compiled_step(spec)
    start = time.perf_counter()
    state, metrics = step(state, keys)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, metrics = step(state, keys)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    tokens = spec.batch_size * spec.task.sequence_length(spec.train_length)
    return {"compile_s": compile_s, "step_s": median, "tokens_per_s": tokens / median}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--long", type=int, default=4096)
    parser.add_argument("--short", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = dict(MODEL)
    if args.smoke:
        model.update(d_model=32, num_layers=1, num_heads=2, mlp_dim=64)
        args.long, args.short, args.window, args.repeats = 256, 32, 32, 2
    tokens = args.short * 16
    long_spec = windowed(
        make_spec("rope", args.long, tokens // args.long, model=model),
        args.window,
        args.block_size,
    )
    short_spec = make_spec("rope", args.short, tokens // args.short, model=model)
    results = {
        "windowed": {
            "length": args.long,
            "window": args.window,
            **time_steps(long_spec, args.repeats),
        },
        "full": {"length": args.short, **time_steps(short_spec, args.repeats)},
    }
    results["ratio_windowed_to_full"] = (
        results["windowed"]["tokens_per_s"] / results["full"]["tokens_per_s"]
    )
    for name in ("windowed", "full"):
        row = results[name]
        print(
            f"{name:9s} L {row['length']:5d}: {row['tokens_per_s']:9.0f} tokens/s "
            f"(step {row['step_s'] * 1e3:.0f} ms, compile {row['compile_s']:.1f} s)"
        )
    print(f"windowed / full tokens per second: {results['ratio_windowed_to_full']:.2f}")
    if args.out:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
