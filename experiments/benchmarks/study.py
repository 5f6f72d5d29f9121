"""Wall time of the quick study preset end to end, as ``make study`` runs it.

Runs ``python -m experiments.length_extrapolation --config experiments/configs/quick.py``
in a fresh process with an empty work dir (so no finished cell is skipped), and records
its wall time, the load average before and after (the machine's other work slows it), and
the process's exit status. The target is at most 15 minutes on a 2-core CPU.

Command (about 5 minutes on an idle 2-core CPU):
  .venv/bin/python -m experiments.benchmarks.study --out runs/benchmarks/study.json

Flags: ``--config`` (another preset), ``--workdir`` (default: a fresh temporary
directory, removed afterwards), ``--smoke`` (the smoke preset, seconds to minutes).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from experiments.benchmarks.report import write_json

TARGET_S = 15 * 60


def run_study(config: str, workdir: str) -> dict:
    """Runs one study in a child process; returns its wall time and exit status."""
    command = [
        sys.executable,
        "-m",
        "experiments.length_extrapolation",
        f"--config={config}",
        f"--workdir={workdir}",
    ]
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    return {
        "config": config,
        "wall_s": wall_s,
        "returncode": done.returncode,
        "stderr_tail": done.stderr[-2000:] if done.returncode else "",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/study.json")
    parser.add_argument("--config", default="experiments/configs/quick.py")
    parser.add_argument("--workdir", default=None, help="default: a fresh temporary directory")
    parser.add_argument("--smoke", action="store_true", help="the smoke preset")
    args = parser.parse_args(argv)
    if args.smoke:
        args.config = "experiments/configs/smoke.py"
    workdir = args.workdir or tempfile.mkdtemp(prefix="study_benchmark_")
    try:
        row = run_study(args.config, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.out, row)
    status = "ok" if row["returncode"] == 0 else f"exit status {row['returncode']}"
    print(
        f"{args.config}: {row['wall_s'] / 60:.1f} min ({status}); load average "
        f"{row['load_average_before'][0]:.1f} before, {row['load_average_after'][0]:.1f} after"
    )
    if row["returncode"] == 0 and args.config.endswith("quick.py"):
        ok = row["wall_s"] <= TARGET_S
        print(
            f"{'PASS' if ok else 'FAIL'} quick study: {row['wall_s'] / 60:.1f} min "
            f"(target <= {TARGET_S // 60} min)"
        )
    if row["returncode"]:
        print(row["stderr_tail"], file=sys.stderr)


if __name__ == "__main__":
    main()
