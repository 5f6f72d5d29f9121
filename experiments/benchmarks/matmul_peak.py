"""The machine's own matrix-multiply throughput, the denominator of every utilization figure.

A vendor's peak says what the silicon could do; what a JAX program on this machine, with
this XLA build, these threads and whatever else is running, can do is a square matmul
timed in the same process. Every other benchmark here reports its speed as a fraction of
the number this one measures, taken minutes apart in one process, so a busy machine
lowers both and the ratio stays meaningful.

Square ``n x n @ n x n`` products (``2 n^3`` FLOPs) for several ``n``; for each, the best
of ``repeats`` timed runs of a jit-compiled loop of ``inner`` products (one dispatch, so
Python overhead does not count). The peak is the best size's throughput. float32 on CPU;
float32 and bfloat16 on GPU and TPU (float32 there runs at the backend's default
precision, e.g. TF32 on NVIDIA GPUs).

Command:
  .venv/bin/python -m experiments.benchmarks.matmul_peak --out runs/benchmarks/matmul_peak.json

Also measured: the memory bandwidth of a streaming ``a x + b`` over 256 MiB, the
denominator of the other floor (bytes moved / bandwidth).

Flags: ``--sizes 256,512,1024,2048``, ``--repeats 7``, ``--smoke`` (small sizes, seconds).
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp

from experiments.benchmarks.report import write_json

DEFAULT_SIZES = (256, 512, 1024, 2048)


def default_dtypes() -> tuple[str, ...]:
    """float32 everywhere; bfloat16 too on accelerators (CPU bfloat16 matmuls are emulated)."""
    return ("float32",) if jax.default_backend() == "cpu" else ("float32", "bfloat16")


def _chain(n: int, inner: int, dtype: str):
    """A jitted loop of ``inner`` dependent products, so XLA cannot drop or merge them."""

    def body(_, carry):
        a, b = carry
        # Renormalizing keeps values finite; its n^2 work is negligible next to 2 n^3.
        c = jnp.dot(a, b, preferred_element_type=jnp.float32)
        return (c * (1.0 / n)).astype(a.dtype), b

    def run(a, b):
        return jax.lax.fori_loop(0, inner, body, (a, b))[0]

    return jax.jit(run)


def measure_matmul(n: int, dtype: str = "float32", repeats: int = 7) -> dict:
    """Best FLOP/s of ``n x n`` matmuls of ``dtype`` over ``repeats`` timed runs."""
    # At least ~4 GFLOP per timed run keeps each timing far above timer and dispatch noise.
    inner = max(1, int(4e9 // (2 * n**3)))
    key_a, key_b = jax.random.split(jax.random.key(n))
    a = jax.random.normal(key_a, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(key_b, (n, n), jnp.float32).astype(dtype)
    compiled = _chain(n, inner, dtype).lower(a, b).compile()
    jax.block_until_ready(compiled(a, b))  # warm caches and thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(a, b))
        times.append(time.perf_counter() - start)
    flops = 2 * n**3 * inner
    return {
        "n": n,
        "dtype": dtype,
        "flops_per_run": flops,
        "best_s": min(times),
        "median_s": sorted(times)[len(times) // 2],
        "flops_per_s": flops / min(times),
    }


def measure_peak(
    dtype: str = "float32", sizes: tuple[int, ...] = DEFAULT_SIZES, repeats: int = 7
) -> dict:
    """The highest matmul throughput over ``sizes``, with every size's measurement.

    Returns:
      ``{"dtype", "peak_flops_per_s", "best_n", "sizes": [per-size dicts], "device",
      "load_average"}``.
    """
    rows = [measure_matmul(n, dtype, repeats) for n in sizes]
    best = max(rows, key=lambda r: r["flops_per_s"])
    return {
        "dtype": dtype,
        "peak_flops_per_s": best["flops_per_s"],
        "best_n": best["n"],
        "sizes": rows,
        "device": str(jax.devices()[0]),
        "load_average": os.getloadavg(),
    }


def measure_bandwidth(megabytes: int = 256, repeats: int = 7) -> dict:
    """Best memory bandwidth of a streaming ``y = a x + b`` over a float32 array.

    The array is far larger than any cache, so each element is read once and written
    once: ``2 * megabytes`` of traffic per run. This is the second floor of a step (bytes
    moved / bandwidth), next to the first (counted FLOPs / matmul peak).
    """
    n = megabytes * 2**20 // 4
    x = jnp.ones((n,), jnp.float32)
    compiled = jax.jit(lambda v: v * 1.0001 + 0.5).lower(x).compile()
    jax.block_until_ready(compiled(x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(x))
        times.append(time.perf_counter() - start)
    moved = 2 * n * 4
    return {"bytes_per_run": moved, "best_s": min(times), "bytes_per_s": moved / min(times)}


def table(peaks: list[dict]) -> str:
    lines = ["| dtype | n | best (s) | GFLOP/s |", "|---|---|---|---|"]
    for peak in peaks:
        for row in peak["sizes"]:
            lines.append(
                f"| {row['dtype']} | {row['n']} | {row['best_s']:.4f} | "
                f"{row['flops_per_s'] / 1e9:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/matmul_peak.json")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="small sizes, two repeats")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if args.smoke:
        sizes, args.repeats = (64, 128), 2
    peaks = [measure_peak(dtype, sizes, args.repeats) for dtype in default_dtypes()]
    bandwidth = measure_bandwidth(16 if args.smoke else 256, args.repeats)
    write_json(args.out, {"matmul": peaks, "bandwidth": bandwidth})
    print(table(peaks))
    print(f"memory bandwidth: {bandwidth['bytes_per_s'] / 1e9:.1f} GB/s (streaming a x + b)")
    for peak in peaks:
        print(
            f"peak {peak['dtype']}: {peak['peak_flops_per_s'] / 1e9:.1f} GFLOP/s at n = "
            f"{peak['best_n']} (load average {peak['load_average'][0]:.1f})"
        )


if __name__ == "__main__":
    main()
