"""The README's encodings table is the one the registry generates, and the generator's rules."""

import os
import subprocess
import sys

import pytest

import posenc_jax as pj
from experiments import encodings_table
from posenc_jax.encodings import PositionalEncoding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _readme() -> str:
    with open(README) as f:
        return f.read()


def _rows(text: str) -> dict[str, list[str]]:
    """Table rows of the README region, keyed by encoding name."""
    region = text.split(encodings_table.START)[1].split(encodings_table.END)[0]
    rows = {}
    for line in region.strip().splitlines()[2:]:
        # Split on unescaped pipes only.
        cells = [c.strip() for c in line.replace("\\|", "\0").strip("|").split("|")]
        cells = [c.replace("\0", "\\|") for c in cells]
        rows[cells[0].split("`")[1]] = cells
    return rows


def test_readme_table_is_the_generated_one():
    readme = _readme()
    assert encodings_table.with_table(readme) == readme, (
        "README.md's encodings table is out of date: run python -m experiments.encodings_table"
    )


def test_every_registered_encoding_has_exactly_one_row():
    rows = _rows(_readme())
    assert sorted(rows) == pj.encodings.names()
    for name, cells in rows.items():
        assert len(cells) == 5, cells
        assert cells[0] == f"`{name}` (`{pj.encodings.get_class(name).__name__}`)"


@pytest.mark.parametrize(
    "name,hooks",
    [
        ("nope", []),
        ("sinusoidal", ["embed"]),
        ("learned", ["embed"]),
        ("rope", ["rotate"]),
        ("rope_yarn", ["rotate"]),  # inherited from RoPE's base class
        ("alibi", ["bias"]),
        ("t5", ["bias"]),
        ("cope", ["contextual"]),
        ("shaw", ["contextual"]),
        ("fox", ["decay"]),
        ("abacus", ["embed", "task positions"]),
        # Every hook and choice is the wrapped encoding's; its own choice is positions.
        (
            "randomized",
            ["embed", "rotate", "bias", "contextual", "decay", "positions", "task positions"],
        ),
    ],
)
def test_hooks_are_the_overridden_hook_methods(name, hooks):
    assert encodings_table.hooks(pj.encodings.get_class(name)) == hooks
    assert _rows(_readme())[name][1] == (", ".join(hooks) or "none")


class _Documented(PositionalEncoding):
    """A bias with a ``|pipe|`` in its summary.

    More text that is not the summary.

    Attributes:
      width: unused.

    References:
      Someone and Other, "A Title That Runs Over
      Two Lines", Venue 2020.
    """

    width: int = 3
    label: str = "x"

    def _bias_fn(self, *, num_heads, causal, context=None):
        return None

    def sample_positions(self, key, batch_size, length, *, lengths=None):
        return super().sample_positions(key, batch_size, length, lengths=lengths)


class _Undocumented(PositionalEncoding):
    width: int = 1


def test_row_cells_come_from_the_docstring_and_signature():
    assert encodings_table.hooks(_Documented) == ["bias", "positions"]
    assert encodings_table.summary(_Documented) == "A bias with a `\\|pipe\\|` in its summary."
    assert encodings_table.references(_Documented) == (
        'Someone and Other, "A Title That Runs Over Two Lines", Venue 2020.'
    )
    assert encodings_table.hyperparameter_text(_Documented) == "`width=3`, `label='x'`"
    assert encodings_table.hooks(_Undocumented) == []
    assert encodings_table.hyperparameter_text(_Undocumented) == "`width=1`"


def test_an_encoding_without_a_docstring_is_an_error():
    for read in (encodings_table.summary, encodings_table.references):
        with pytest.raises(ValueError, match="_Undocumented has no docstring"):
            read(_Undocumented)


def test_only_the_region_between_the_markers_changes():
    text = f"# Title\n\nbefore\n{encodings_table.START}\nstale\n{encodings_table.END}\nafter\n"
    updated = encodings_table.with_table(text)
    assert updated.startswith(f"# Title\n\nbefore\n{encodings_table.START}\n| name (class) |")
    assert updated.endswith(f"|\n{encodings_table.END}\nafter\n")
    assert "stale" not in updated
    assert encodings_table.with_table(updated) == updated


@pytest.mark.parametrize(
    "text",
    [
        "no markers at all",
        f"{encodings_table.END}\n{encodings_table.START}\n",
        f"{encodings_table.START}\n{encodings_table.START}\n{encodings_table.END}\n",
    ],
)
def test_missing_or_misordered_markers_are_an_error(text):
    with pytest.raises(ValueError, match="encodings-table:start"):
        encodings_table.with_table(text)


def test_command_checks_and_rewrites(tmp_path):
    stale = f"intro\n{encodings_table.START}\nold row\n{encodings_table.END}\noutro\n"
    path = tmp_path / "README.md"
    path.write_text(stale)

    def run(*flags):
        return subprocess.run(
            [sys.executable, "-m", "experiments.encodings_table", f"--readme={path}", *flags],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    check = run("--check")
    assert check.returncode == 1 and "out of date" in check.stderr
    assert path.read_text() == stale  # --check writes nothing
    write = run()
    assert write.returncode == 0, write.stderr[-2000:]
    assert path.read_text() == encodings_table.with_table(stale)
    assert run("--check").returncode == 0
