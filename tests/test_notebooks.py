"""The Colab notebooks run headless, end to end, in smoke mode, and are stored clean.

Each notebook is executed with nbclient in a kernel of this interpreter (a kernel spec
written to a temporary directory, so the test never depends on which ``python`` is first
on PATH), with ``POSENC_SMOKE=1`` (small presets, no trained figures) and a temporary
working directory, as a user's fresh folder would be. Executing the three takes over 90 s
on a 2-core CPU (mostly XLA compilation), so those tests are marked slow.
"""

import glob
import os

import nbformat
import pytest
from ipykernel.kernelspec import install as install_kernel_spec
from nbclient import NotebookClient

from tests.test_figures_cli import ANALYTIC_FIGURES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, "colab")
NOTEBOOKS = ["01_quickstart.ipynb", "02_length_extrapolation.ipynb", "03_figures.ipynb"]
KERNEL_NAME = "posenc-jax-test"


def _read(name):
    return nbformat.read(os.path.join(COLAB, name), as_version=4)


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernel spec that starts ``sys.executable``, found through JUPYTER_PATH."""
    prefix = tmp_path_factory.mktemp("jupyter")
    install_kernel_spec(kernel_name=KERNEL_NAME, prefix=str(prefix))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        yield KERNEL_NAME


def _execute(name, kernel_name, workdir, monkeypatch):
    monkeypatch.setenv("POSENC_SMOKE", "1")
    # The test suite's strictness, inside the notebooks too.
    monkeypatch.setenv("JAX_NUMPY_RANK_PROMOTION", "raise")
    notebook = _read(name)
    client = NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=600,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError naming the cell at the first error
    return notebook


def _stdout(notebook) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream" and output.name == "stdout"
    )


def test_the_notebooks_are_the_three_expected():
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(COLAB, "*.ipynb"))) == (
        NOTEBOOKS
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert "widgets" not in notebook.metadata


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_first_cell_installs_only_when_the_package_is_missing(name):
    first = next(c for c in _read(name).cells if c.cell_type == "code").source
    assert 'importlib.util.find_spec("posenc_jax") is None' in first
    assert "git" in first and "pip" in first


@pytest.mark.slow
def test_quickstart_runs(kernel_name, tmp_path, monkeypatch):
    notebook = _execute("01_quickstart.ipynb", kernel_name, tmp_path, monkeypatch)
    stdout = _stdout(notebook)
    # The setup cell found the installed package and cloned nothing.
    assert not os.path.exists(tmp_path / "posenc_jax_repo")
    for name in ("alibi", "rope", "t5", "sinusoidal"):
        assert f"\n{name} " in "\n" + stdout
    assert "NNX after" in stdout and "linen (rope) after" in stdout
    # The linen Transformer loaded into its NNX twin computes the same logits, and converts
    # back to the same tree.
    assert float(stdout.split("max |logit difference| =")[1].split()[0]) < 1e-5
    assert "NNX -> linen, the same tree: True" in stdout
    assert "Llama3RoPE" in stdout
    shift = float(stdout.split("max |f(p + 100) - f(p)| =")[1].split()[0])
    assert shift < 1e-4  # RoPE and ALiBi see only i - j


@pytest.mark.slow
def test_length_extrapolation_runs_and_writes_results(kernel_name, tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("POSENC_RESULTS_DIR", str(results))
    notebook = _execute("02_length_extrapolation.ipynb", kernel_name, tmp_path, monkeypatch)
    stdout = _stdout(notebook)
    assert "backend: cpu" in stdout and "preset 'smoke'" in stdout
    rows = (results / "smoke" / "results.jsonl").read_text().splitlines()
    assert len(rows) == 2 * 6  # two encodings x (3, 4, 5, 6 = every length to 2N, 4N, 8N)
    assert (results / "smoke" / "table.md").exists()
    assert glob.glob(str(results / "smoke" / "plots" / "*.png"))


@pytest.mark.slow
def test_figures_runs_and_writes_the_analytic_figures(kernel_name, tmp_path, monkeypatch):
    notebook = _execute("03_figures.ipynb", kernel_name, tmp_path, monkeypatch)
    written = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "figures" / "*.png")))
    assert written == sorted(ANALYTIC_FIGURES)
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]
    assert len(images) == len(written)
