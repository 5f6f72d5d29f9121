"""Peak memory and speed of Transformer evaluation with dense and chunked attention.

Dense attention holds every layer's ``[B, H, L, L]`` logits: at L = 16,384 with 8 heads
that is 8.6 GB in float32 for one layer. Chunked attention holds one tile. This benchmark
evaluates a decoder-only Transformer (d_model 256, 4 layers, 8 heads, batch 1) with ALiBi,
T5 and FIRE biases and records, per configuration, in a fresh process each:

* the peak resident memory of that process (``getrusage(RUSAGE_SELF).ru_maxrss`` read by
  the process just before it exits, so nothing from another configuration is included),
* the compile time and the best of ``--repeats`` forward-pass times.

Targets checked and printed: every chunked run at L = 16,384 peaks below 2 GB, and
chunked is at most 1.2x the dense time at L = 2,048.

Command:
  .venv/bin/python -m experiments.benchmarks.attention --out runs/benchmarks/attention.json

Result (2-core CPU shared with other jobs, so times are noisy; block size 256):

  | encoding | L | attention | peak RSS (GiB) | forward (s) |
  | alibi | 2048 | dense | 0.71 | 1.96 |
  | alibi | 2048 | chunked | 0.36 | 0.86 |
  | alibi | 16384 | chunked | 0.92 | 15.2 |
  | t5 | 2048 | dense | 0.74 | 1.21 |
  | t5 | 2048 | chunked | 0.37 | 0.39 |
  | t5 | 16384 | chunked | 0.96 | 16.8 |
  | fire | 2048 | dense | 2.62 | 3.70 |
  | fire | 2048 | chunked | 0.40 | 0.36 |
  | fire | 16384 | chunked | 0.95 | 19.9 |

Flags: ``--encodings alibi,t5,fire``, ``--long 16384``, ``--short 2048``, ``--repeats 3``,
``--block-size`` (default: ``posenc_jax.attention.chunked.default_block_size``); ``--smoke``
runs tiny lengths in seconds (for checking the script).

``--level op`` measures the attention operation alone instead (B = 1, H = 8, K = 32, causal,
positions ``arange(L)``), one hook family per encoding (``--encodings
nope,rope,alibi,t5,fire``), at ``--lengths 512,...,16384``, with three implementations:
the package's dense and chunked paths and ``jax.nn.dot_product_attention`` (XLA; given the
encoding's bias as a materialized ``[1, H, L, L]`` array and ``is_causal=True``, which with
``arange`` positions is the same mask). Each (encoding, L, implementation, mode) runs in
its own process, mode "forward" or "forward_backward" (gradients of q, k and v), so the
peak memory of each is its own. Dense and ``jax.nn`` stop at ``--dense-max`` (4,096 by
default: at 8,192 one float32 ``[8, L, L]`` map is 2 GiB and the backward pass holds
several).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from experiments.benchmarks.report import write_json

MEMORY_TARGET_BYTES = 2 * 1024**3
SPEED_TARGET_RATIO = 1.2
MODEL = {"d_model": 256, "num_layers": 4, "num_heads": 8, "vocab_size": 256}
DEFAULT_ENCODINGS = "alibi,t5,fire"


def _tile_edge(implementation: str, block_size: int | None, batch: int, heads: int) -> int | None:
    """The chunked path's tile edge (the package default unless given); None otherwise."""
    if implementation != "chunked":
        return None
    from posenc_jax.attention.chunked import default_block_size

    return block_size or default_block_size(batch, heads)


def measure(
    encoding: str, length: int, implementation: str, block_size: int | None, repeats: int
) -> dict:
    """Builds, compiles and times one evaluation in this process; returns the numbers."""
    import jax
    import jax.numpy as jnp

    import posenc_jax as pj

    block_size = _tile_edge(implementation, block_size, 1, MODEL["num_heads"])

    config = pj.models.TransformerConfig(
        architecture="decoder",
        encoding=pj.encodings.get(encoding),
        attention_implementation=implementation,
        attention_block_size=block_size,
        **MODEL,
    )
    model = pj.models.Transformer(config)
    # Parameters do not depend on the length: initialize on a short sequence and keep only
    # the "params" collection (others, such as perturbation points, are shaped by the input).
    params = {
        "params": jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64), jnp.int32))["params"]
    }
    tokens = jax.random.randint(jax.random.key(1), (1, length), 0, MODEL["vocab_size"])
    forward = jax.jit(model.apply)

    start = time.perf_counter()
    compiled = forward.lower(params, tokens).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, tokens))
        times.append(time.perf_counter() - start)
    # Linux reports ru_maxrss in KiB.
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "encoding": encoding,
        "length": length,
        "implementation": implementation,
        "block_size": block_size,
        "compile_s": compile_s,
        "forward_s": min(times),
        "forward_all_s": times,
        "peak_rss_bytes": peak_rss,
        "device": str(jax.devices()[0]),
    }


OP_SHAPE = {"batch": 1, "num_heads": 8, "head_dim": 32}


def measure_op(
    encoding: str, length: int, implementation: str, mode: str, block_size: int | None, repeats: int
) -> dict:
    """Times causal attention of one encoding's hooks alone, forward or forward + backward."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    import posenc_jax as pj

    heads, head_dim = OP_SHAPE["num_heads"], OP_SHAPE["head_dim"]
    block_size = _tile_edge(implementation, block_size, OP_SHAPE["batch"], heads)

    class CausalAttention(nn.Module):
        """The encoding's rotate and bias hooks around one attention call."""

        encoding: pj.encodings.PositionalEncoding

        @nn.compact
        def __call__(self, q, k, v, positions):
            q, k = self.encoding.rotate(q, k, positions, positions)
            bias_fn = self.encoding.bias_fn(num_heads=heads, causal=True)
            if implementation != "jax_nn":
                return pj.attention.dot_product_attention(
                    q,
                    k,
                    v,
                    bias_fn=bias_fn,
                    causal=True,
                    q_positions=positions,
                    k_positions=positions,
                    block_size=block_size,
                    implementation=implementation,
                )
            # jax.nn takes a rank-4 bias; bias functions may return [H, L, S].
            bias = None if bias_fn is None else jnp.asarray(bias_fn(positions, positions))
            bias = bias if bias is None or bias.ndim == 4 else bias[None]
            return jax.nn.dot_product_attention(
                q, k, v, bias=bias, is_causal=True, implementation="xla"
            )

    shape = (OP_SHAPE["batch"], length, heads, head_dim)
    q, k, v, cotangent = (
        jax.random.normal(key, shape, jnp.float32) for key in jax.random.split(jax.random.key(0), 4)
    )
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), shape[:2])
    module = CausalAttention(pj.encodings.get(encoding))
    small = (q[:, :8], k[:, :8], v[:, :8], positions[:, :8])
    variables = jax.jit(module.init)(jax.random.key(1), *small)

    def forward(q, k, v):
        return module.apply(variables, q, k, v, positions)

    if mode == "forward":
        program = jax.jit(forward)
    else:
        program = jax.jit(jax.grad(lambda *qkv: jnp.sum(forward(*qkv) * cotangent), (0, 1, 2)))
    start = time.perf_counter()
    compiled = program.lower(q, k, v).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(q, k, v))
        times.append(time.perf_counter() - start)
    return {
        "encoding": encoding,
        "length": length,
        "implementation": implementation,
        "mode": mode,
        "block_size": block_size,
        "compile_s": compile_s,
        "time_s": min(times),
        "time_all_s": times,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "load_average": os.getloadavg(),
        "device": str(jax.devices()[0]),
    }


def op_table(rows: list[dict]) -> str:
    """One line per (encoding, L, implementation): forward and forward + backward."""
    lines = [
        "| encoding | L | attention | forward (s) | fwd+bwd (s) | peak RSS fwd / fwd+bwd (GiB) |",
        "|---|---|---|---|---|---|",
    ]
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["encoding"], r["length"], r["implementation"]), {})[r["mode"]] = r
    for (encoding, length, implementation), modes in cells.items():
        times, memory = [], []
        for mode in ("forward", "forward_backward"):
            r = modes.get(mode)
            if r is None or "error" in r:
                times.append("error" if r else "")
                memory.append("")
            else:
                times.append(f"{r['time_s']:.3f}")
                memory.append(f"{r['peak_rss_bytes'] / 1024**3:.2f}")
        lines.append(
            f"| {encoding} | {length} | {implementation} | {times[0]} | {times[1]} | "
            f"{memory[0]} / {memory[1]} |"
        )
    return "\n".join(lines)


def run_isolated(spec: dict) -> dict:
    """Runs :func:`measure` in a fresh Python process so its peak memory is its own."""
    command = [
        sys.executable,
        "-m",
        "experiments.benchmarks.attention",
        "--worker",
        json.dumps(spec),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        # The exception line, or the exit status (a process killed for memory prints none).
        errors = [line for line in done.stderr.splitlines() if "Error" in line.split(":")[0]]
        return {**spec, "error": errors[-1:] or [f"exit status {done.returncode}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_targets(rows: list[dict], long: int, short: int) -> list[str]:
    """Lines that say whether each target was met."""
    lines = []
    for row in rows:
        if row["implementation"] == "chunked" and row["length"] == long and "error" not in row:
            ok = row["peak_rss_bytes"] <= MEMORY_TARGET_BYTES
            lines.append(
                f"{'PASS' if ok else 'FAIL'} memory {row['encoding']} L={long}: "
                f"{row['peak_rss_bytes'] / 1024**3:.2f} GiB (target <= 2 GiB)"
            )
    by_key = {(r["encoding"], r["length"], r["implementation"]): r for r in rows}
    for encoding in sorted({r["encoding"] for r in rows}):
        dense, chunked = (
            by_key.get((encoding, short, "dense")),
            by_key.get((encoding, short, "chunked")),
        )
        if dense and chunked and "error" not in dense and "error" not in chunked:
            ratio = chunked["forward_s"] / dense["forward_s"]
            ok = ratio <= SPEED_TARGET_RATIO
            lines.append(
                f"{'PASS' if ok else 'FAIL'} speed {encoding} L={short}: chunked/dense = "
                f"{ratio:.2f} (target <= {SPEED_TARGET_RATIO})"
            )
    return lines


def table(rows: list[dict]) -> str:
    header = "| encoding | L | attention | peak RSS (GiB) | compile (s) | forward (s) |"
    lines = [header, "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['encoding']} | {r['length']} | {r['implementation']} | error: "
                f"{' '.join(r['error'])} | | |"
            )
            continue
        lines.append(
            f"| {r['encoding']} | {r['length']} | {r['implementation']} | "
            f"{r['peak_rss_bytes'] / 1024**3:.2f} | {r['compile_s']:.1f} | {r['forward_s']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/attention.json")
    parser.add_argument("--encodings", default=DEFAULT_ENCODINGS)
    parser.add_argument("--long", type=int, default=16384)
    parser.add_argument("--short", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-size", type=int, default=None, help="default: the package's")
    parser.add_argument("--smoke", action="store_true", help="tiny lengths, one repeat")
    parser.add_argument("--level", choices=("model", "op"), default="model")
    parser.add_argument("--lengths", default="512,1024,2048,4096,8192,16384", help="op level")
    parser.add_argument("--dense-max", type=int, default=4096, help="op level: longest dense L")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        level = spec.pop("level", "model")
        print(json.dumps((measure_op if level == "op" else measure)(**spec)))
        return
    if args.smoke:
        args.long, args.short, args.repeats, args.block_size = 256, 128, 1, 64
        args.lengths, args.dense_max = "128,256", 128
    if args.level == "op":
        run_op_level(args)
        return

    specs = []
    for encoding in args.encodings.split(","):
        for implementation in ("dense", "chunked"):
            specs.append((encoding, args.short, implementation))
        # Dense at the long length needs tens of GB for the logits alone; only chunked runs.
        specs.append((encoding, args.long, "chunked"))
    rows = []
    for encoding, length, implementation in specs:
        spec = {
            "encoding": encoding,
            "length": length,
            "implementation": implementation,
            "block_size": args.block_size,
            "repeats": args.repeats,
        }
        rows.append(run_isolated(spec))
        print(json.dumps(rows[-1]), flush=True)

    write_json(args.out, {"model": MODEL, "rows": rows})
    print(table(rows))
    print("\n".join(check_targets(rows, args.long, args.short)))


def run_op_level(args: argparse.Namespace) -> None:
    """Every (encoding, L, implementation, mode) of the op level, each in its own process."""
    encodings = args.encodings if args.encodings != DEFAULT_ENCODINGS else "nope,rope,alibi,t5,fire"
    rows = []
    for encoding in encodings.split(","):
        for length in (int(x) for x in args.lengths.split(",")):
            implementations = ["chunked"]
            if length <= args.dense_max:
                implementations = ["dense", "chunked", "jax_nn"]
            for implementation in implementations:
                for mode in ("forward", "forward_backward"):
                    spec = {
                        "level": "op",
                        "encoding": encoding,
                        "length": length,
                        "implementation": implementation,
                        "mode": mode,
                        "block_size": args.block_size,
                        "repeats": args.repeats,
                    }
                    rows.append(run_isolated(spec))
                    print(json.dumps(rows[-1]), flush=True)
    write_json(args.out, {"shape": OP_SHAPE, "rows": rows})
    print(op_table(rows))


if __name__ == "__main__":
    main()
