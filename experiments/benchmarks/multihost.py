"""Training steps per second of a job of 2 processes (1 device each) against 1 process.

A host added to a job (``posenc_jax.train.distributed``) brings its devices, and costs the
collectives between processes: the gradient all-reduce when a seed's batch is split over
the devices, the gather of each step's metrics in every case. This measures what is left,
on the quick preset's model and task (d_model 64, 2 layers, the copy task at N = 8, batch
32, RoPE), the step driven as ``train`` drives it, the same global work per step in both
jobs:

* ``batch``: one seed, its batch of 32 split over the job's devices (16 per process);
* ``seeds``: two seeds, one per device (one process trains both, vmapped).

For each, one process of 1 CPU device runs ``--steps`` timed steps, then a job of
``--processes`` processes of 1 device each on 127.0.0.1 (gloo collectives) runs the same
steps; the ratio of their steps per second is the throughput a host adds. Here the
processes share one machine's cores, so the ratio is a floor of what separate hosts
get: two processes on this 2-core CPU compete for the cores one process already uses.
The load average is recorded with every number (the machine is shared).

Command:
  .venv/bin/python -m experiments.benchmarks.multihost --out runs/benchmarks/multihost.json

Flags: ``--steps 100``, ``--processes 2``, ``--smoke`` (10 steps).
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

WORKLOADS = {"batch": 1, "seeds": 2}  # name: number of seeds
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def worker(workload: str, steps: int, num_processes: int, process_id: int, port: int) -> None:
    """One process of the measured job: joins it, trains, prints its steps per second."""
    from posenc_jax.train.distributed import barrier, is_main_process, join_job  # noqa: PLC0415

    if num_processes > 1:
        join_job(f"127.0.0.1:{port}", num_processes, process_id, initialization_timeout=120)
    from experiments.benchmarks.seeds import study_spec  # noqa: PLC0415
    from posenc_jax.train.loop import compiled_init, compiled_step, run_keys  # noqa: PLC0415
    from posenc_jax.train.sharding import make_mesh, placement, to_host  # noqa: PLC0415

    seeds = list(range(WORKLOADS[workload]))
    spec = study_spec("rope", steps + 10)
    place = placement(make_mesh(), num_seeds=len(seeds), batch_size=spec.batch_size)
    keys = run_keys(seeds, place.state)
    state = compiled_init(spec, place)(keys)
    step = compiled_step(spec, place)
    for _ in range(3):  # compile, then settle
        state, metrics = step(state, keys)
        to_host(metrics["loss"])
    barrier("timed steps")
    start = time.perf_counter()
    pending = None
    for _ in range(steps):  # as train: dispatch step t + 1, then read step t's loss
        state, metrics = step(state, keys)
        if pending is not None:
            to_host(pending["loss"])
        pending = metrics
    to_host(pending["loss"])
    elapsed = time.perf_counter() - start
    barrier("timed steps done")
    if is_main_process():
        print(
            "RESULT "
            + json.dumps(
                {
                    "workload": workload,
                    "processes": num_processes,
                    "devices": len(place.state.mesh.devices.flat),
                    "seeds": len(seeds),
                    "steps": steps,
                    "seconds": elapsed,
                    "steps_per_s": steps / elapsed,
                    "final_loss": [float(x) for x in to_host(pending["loss"])],
                }
            ),
            flush=True,
        )


def run_job(workload: str, steps: int, num_processes: int) -> dict:
    """Runs one job of ``num_processes`` processes (1 CPU device each); its result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "PYTHONPATH": ROOT,
    }
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.benchmarks.multihost",
                f"--worker={workload},{num_processes},{index},{port}",
                f"--steps={steps}",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(num_processes)
    ]
    load_before = os.getloadavg()
    try:
        outputs = [p.communicate(timeout=600)[0] for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
    for process, output in zip(processes, outputs, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"a benchmark process failed:\n{output[-3000:]}")
    line = next(x for x in outputs[0].splitlines() if x.startswith("RESULT "))
    return {
        **json.loads(line[len("RESULT ") :]),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def table(rows: list[dict], ratios: dict) -> str:
    lines = [
        "| workload | processes x devices | steps/s | x 1 process | load (1 min) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = ratios[r["workload"]] if r["processes"] > 1 else 1.0
        lines.append(
            f"| {r['workload']} ({r['seeds']} seed(s)) | {r['processes']} x 1 | "
            f"{r['steps_per_s']:.1f} | {ratio:.2f} | {r['load_average_before'][0]:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/multihost.json")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="10 steps")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        workload, num_processes, process_id, port = args.worker.split(",")
        worker(workload, args.steps, int(num_processes), int(process_id), int(port))
        return
    from experiments.benchmarks.report import write_json  # noqa: PLC0415

    steps = 10 if args.smoke else args.steps
    rows, ratios = [], {}
    for workload in WORKLOADS:
        single = run_job(workload, steps, 1)
        job = run_job(workload, steps, args.processes)
        ratios[workload] = job["steps_per_s"] / single["steps_per_s"]
        rows += [single, job]
        print(json.dumps(single), json.dumps(job), sep="\n", flush=True)
    write_json(
        args.out,
        {"rows": rows, "ratios": ratios, "cpu_count": os.cpu_count(), "uname": os.uname()[:3]},
    )
    print(table(rows, ratios))


if __name__ == "__main__":
    main()
