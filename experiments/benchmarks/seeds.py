"""Wall time of S = 1, 2, 4, 8 seeds trained together as one vmapped program.

The study trains every seed of a (task, encoding) cell at once: ``train`` vmaps the step
over run keys, so S seeds are one program whose matmuls are S times larger. On a machine
where one small run leaves the cores idle (dispatch, small matrices), S seeds cost far
less than S runs. This measures how much less, on the quick preset's model and task
(the cells ``make study`` trains): d_model 64, 2 layers, 4 heads, the copy task at N = 8
(16 tokens), batch 32.

For each S, in this process and in turn:

* ``compile_s``: lower + compile of the study's step (``loop.compiled_step``) for S seeds;
* ``steps_s``: ``--steps`` steps driven like ``train`` drives them (dispatch step t + 1,
  then read step t's loss), after one untimed step;
* ``train_s``: one whole ``train(spec, seeds)`` call of ``--steps`` steps (initialization,
  compile of that call's schedule, the steps), the wall time a study cell pays.

Ratios against S = 1 are printed for each; the target is ``train_s`` and ``steps_s`` at
S = 4 at most 2.5x those of S = 1.

Command:
  .venv/bin/python -m experiments.benchmarks.seeds --out runs/benchmarks/seeds.json

Flags: ``--seeds 1,2,4,8``, ``--steps 200``, ``--encoding rope``, ``--smoke``.
"""

import argparse
import json
import os
import time

import jax
import numpy as np

from experiments.benchmarks.report import write_json
from experiments.configs import quick
from experiments.length_extrapolation import cell_spec
from posenc_jax.train import LoopConfig, train
from posenc_jax.train.loop import compiled_init, compiled_step, run_keys

SEED_COUNTS = (1, 2, 4, 8)
RATIO_TARGET = 2.5


def study_spec(encoding: str, steps: int):
    """The quick preset's copy cell for ``encoding``, with a ``steps``-step schedule."""
    cfg = quick.get_config()
    cfg.optimizer.total_steps = steps
    cfg.optimizer.warmup_steps = min(cfg.optimizer.warmup_steps, steps - 1)
    return cell_spec(cfg, "copy", encoding)[0]


def measure(encoding: str, num_seeds: int, steps: int) -> dict:
    """Compile, step-loop and whole-``train`` wall times for ``num_seeds`` seeds."""
    seeds = list(range(num_seeds))
    spec = study_spec(encoding, steps)
    keys = run_keys(seeds)
    state = compiled_init(spec)(keys)
    start = time.perf_counter()
    compiled = compiled_step(spec).lower(state, keys).compile()
    compile_s = time.perf_counter() - start
    state, metrics = compiled(state, keys)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    pending = None
    for _ in range(steps):
        state, metrics = compiled(state, keys)
        if pending is not None:
            np.asarray(pending["loss"])
        pending = metrics
    np.asarray(pending["loss"])
    steps_s = time.perf_counter() - start

    # A schedule of a different length is a different spec: this call compiles afresh,
    # as a study cell does.
    train_spec = study_spec(encoding, steps + 1)
    start = time.perf_counter()
    _, history = train(train_spec, seeds, loop=LoopConfig(log_every=steps + 1))
    train_s = time.perf_counter() - start
    return {
        "encoding": encoding,
        "num_seeds": num_seeds,
        "steps": steps,
        "compile_s": compile_s,
        "steps_s": steps_s,
        "step_ms": 1e3 * steps_s / steps,
        "train_s": train_s,
        "final_loss": history[-1]["loss"],
        "load_average": os.getloadavg(),
    }


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = [
        "| seeds | compile (s) | steps (s) | ms/step | x 1 seed | train() (s) | x 1 seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['num_seeds']} | {r['compile_s']:.1f} | {r['steps_s']:.2f} | "
            f"{r['step_ms']:.1f} | {r['steps_s'] / base['steps_s']:.2f} | {r['train_s']:.1f} | "
            f"{r['train_s'] / base['train_s']:.2f} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict]) -> list[str]:
    base = rows[0]
    lines = []
    for r in rows:
        if r["num_seeds"] != 4 or base["num_seeds"] != 1:
            continue
        for key in ("steps_s", "train_s"):
            ratio = r[key] / base[key]
            ok = ratio <= RATIO_TARGET
            lines.append(
                f"{'PASS' if ok else 'FAIL'} 4 seeds / 1 seed ({key}): {ratio:.2f}x "
                f"(target <= {RATIO_TARGET}x)"
            )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/seeds.json")
    parser.add_argument("--seeds", default=",".join(map(str, SEED_COUNTS)))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--encoding", default="rope")
    parser.add_argument("--smoke", action="store_true", help="S = 1, 2 and 10 steps")
    args = parser.parse_args(argv)
    counts = [int(s) for s in args.seeds.split(",")]
    if args.smoke:
        counts, args.steps = [1, 2], 10
    # An untimed run first, so S = 1 does not pay for JAX's own start-up.
    measure(args.encoding, 1, 3)
    rows = []
    for num_seeds in counts:
        rows.append(measure(args.encoding, num_seeds, args.steps))
        print(json.dumps(rows[-1]), flush=True)
    write_json(args.out, {"rows": rows})
    print(table(rows))
    print("\n".join(check_targets(rows)))


if __name__ == "__main__":
    main()
