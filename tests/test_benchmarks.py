"""The memory setup every benchmark JSON records (and the study notes), and one smoke run."""

import json
import subprocess
import sys

import pytest

from experiments import memory_pages
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
    monkeypatch.setattr(memory_pages, "_THP_SETTING", str(thp))
    monkeypatch.setenv("GLIBC_TUNABLES", tunables)
    setup = memory_pages.memory_setup()
    assert setup["transparent_hugepages"] == setting.split("[")[1].split("]")[0]
    assert setup["huge_pages_for_xla"] is huge


def test_memory_setup_without_the_kernel_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(memory_pages, "_THP_SETTING", str(tmp_path / "missing"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert memory_pages.memory_setup() == {
        "glibc_tunables": None,
        "transparent_hugepages": None,
        "huge_pages_for_xla": False,
    }


def test_small_pages_are_reported_on_stderr(tmp_path, monkeypatch, capsys):
    thp = tmp_path / "enabled"
    thp.write_text("always [madvise] never\n")
    monkeypatch.setattr(memory_pages, "_THP_SETTING", str(thp))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    report.write_json(str(tmp_path / "out" / "x.json"), {"rows": [1]})
    assert memory_pages.HUGE_PAGES_TUNABLE in capsys.readouterr().err
    written = json.loads((tmp_path / "out" / "x.json").read_text())
    assert written["rows"] == [1] and written["memory_setup"]["huge_pages_for_xla"] is False


def _smoke_run(module: str, out) -> dict:
    """Runs a benchmark with ``--smoke`` in a fresh process; returns its JSON."""
    done = subprocess.run(
        [sys.executable, "-m", f"experiments.benchmarks.{module}", "--smoke", f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_matmul_peak_smoke_run_writes_its_numbers(tmp_path):
    result = _smoke_run("matmul_peak", tmp_path / "peak.json")
    assert set(result) == {"memory_setup", "matmul", "bandwidth"}
    assert all(peak["peak_flops_per_s"] > 0 for peak in result["matmul"])


def test_the_note_names_the_setting_only_when_it_would_help(tmp_path, monkeypatch):
    thp = tmp_path / "enabled"
    monkeypatch.setattr(memory_pages, "_THP_SETTING", str(thp))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    thp.write_text("always [madvise] never\n")
    assert memory_pages.HUGE_PAGES_TUNABLE in memory_pages.small_pages_note()
    monkeypatch.setenv("GLIBC_TUNABLES", memory_pages.HUGE_PAGES_TUNABLE)
    assert memory_pages.small_pages_note() is None
    thp.write_text("[always] madvise never\n")
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert memory_pages.small_pages_note() is None


def test_windows_benchmark_smoke_run_reports_the_ratio(tmp_path):
    result = _smoke_run("windows", tmp_path / "windows.json")
    assert result["windowed"]["length"] == 256 and result["full"]["length"] == 32
    ratio = result["windowed"]["tokens_per_s"] / result["full"]["tokens_per_s"]
    assert result["ratio_windowed_to_full"] == ratio > 0


def test_peers_benchmark_says_how_to_install_its_peers(tmp_path):
    """The test environment has no PyTorch: the benchmark stops before any work and names
    the install command instead of failing inside an import."""
    try:
        import torch  # noqa: F401

        pytest.skip("PyTorch is installed here; the message is for environments without it")
    except ImportError:
        pass
    done = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.peers", "--smoke", f"--out={tmp_path}/p"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "pip install -e '.[bench]'" in done.stderr
    assert not (tmp_path / "p").exists()
