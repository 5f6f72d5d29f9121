"""The benchmarks' shared report: the memory setup every JSON records, and one smoke run."""

import json
import subprocess
import sys

import pytest

from experiments.benchmarks import report


@pytest.mark.parametrize(
    "setting, tunables, huge",
    [
        ("always [madvise] never\n", "", False),
        ("always [madvise] never\n", "glibc.malloc.hugetlb=1", True),
        ("[always] madvise never\n", "", True),
        ("always madvise [never]\n", "glibc.malloc.hugetlb=1", False),
    ],
)
def test_memory_setup_says_whether_xla_gets_huge_pages(
    tmp_path, monkeypatch, setting, tunables, huge
):
    thp = tmp_path / "enabled"
    thp.write_text(setting)
    monkeypatch.setattr(report, "_THP_SETTING", str(thp))
    monkeypatch.setenv("GLIBC_TUNABLES", tunables)
    setup = report.memory_setup()
    assert setup["transparent_hugepages"] == setting.split("[")[1].split("]")[0]
    assert setup["huge_pages_for_xla"] is huge


def test_memory_setup_without_the_kernel_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_THP_SETTING", str(tmp_path / "missing"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert report.memory_setup() == {
        "glibc_tunables": None,
        "transparent_hugepages": None,
        "huge_pages_for_xla": False,
    }


def test_small_pages_are_reported_on_stderr(tmp_path, monkeypatch, capsys):
    thp = tmp_path / "enabled"
    thp.write_text("always [madvise] never\n")
    monkeypatch.setattr(report, "_THP_SETTING", str(thp))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    report.write_json(str(tmp_path / "out" / "x.json"), {"rows": [1]})
    assert report.HUGE_PAGES_TUNABLE in capsys.readouterr().err
    written = json.loads((tmp_path / "out" / "x.json").read_text())
    assert written["rows"] == [1] and written["memory_setup"]["huge_pages_for_xla"] is False


def test_matmul_peak_smoke_run_writes_its_numbers(tmp_path):
    out = tmp_path / "peak.json"
    done = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.matmul_peak", "--smoke", f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result) == {"memory_setup", "matmul", "bandwidth"}
    assert all(peak["peak_flops_per_s"] > 0 for peak in result["matmul"])
