"""The README's table of encodings, generated from the registry so that it cannot drift.

Command:
  python -m experiments.encodings_table [--readme README.md] [--check]

Rewrites the lines between ``<!-- encodings-table:start -->`` and
``<!-- encodings-table:end -->`` in the README with one row per registered encoding: its
name and class, the hook(s) through which position enters (read from which hook
methods the class overrides), the first line of its docstring, its ``References:`` section
and its hyperparameters with their defaults (``pj.encodings.hyperparameters``). With
``--check`` it writes nothing and exits with status 1 when the README is out of date.
"""

import inspect
import re
import sys

from absl import app, flags

import posenc_jax as pj
from posenc_jax.encodings import PositionalEncoding

START = "<!-- encodings-table:start -->"
END = "<!-- encodings-table:end -->"

# The table's name of each hook (DESIGN.md), by the hook's method name.
HOOK_LABELS = {
    "embed": "embed",
    "rotate": "rotate",
    "bias_fn": "bias",
    "contextual": "contextual",
    "decay": "decay",
}

_README = flags.DEFINE_string("readme", "README.md", "The README whose table is rewritten.")
_CHECK = flags.DEFINE_bool("check", False, "Exit 1 if the table is out of date; write nothing.")


def hooks(cls: type[PositionalEncoding]) -> list[str]:
    """The hooks through which ``cls`` adds position, in DESIGN.md's order.

    A hook counts when the class defines it (``PositionalEncoding.defined_hooks``);
    ``positions`` is added when it overrides ``sample_positions`` (a different choice of
    positions, as randomized encodings are), ``task positions`` when it overrides
    ``embed_positions`` (its embedding reads positions the task assigns: Abacus, position
    coupling).
    """
    used = [HOOK_LABELS[hook] for hook in cls.defined_hooks()]
    if cls.sample_positions is not PositionalEncoding.sample_positions:
        used.append("positions")
    if cls.embed_positions is not PositionalEncoding.embed_positions:
        used.append("task positions")
    return used


def _markdown(text: str) -> str:
    """One line of Markdown from docstring text: RST ``code`` to `code`, pipes escaped."""
    text = " ".join(text.split())
    return text.replace("``", "`").replace("|", "\\|")


def _docstring(cls: type[PositionalEncoding]) -> str:
    """The class's own docstring; an encoding without one is an error."""
    doc = cls.__dict__.get("__doc__")
    # A dataclass (every Flax module) without a docstring gets "Name(signature)" instead.
    if not doc or doc.startswith(f"{cls.__name__}("):
        raise ValueError(
            f"encoding class {cls.__name__} has no docstring; write one: its first line is "
            "its summary in the README table, its References: section the reference."
        )
    return inspect.cleandoc(doc)


def summary(cls: type[PositionalEncoding]) -> str:
    """The first line of the class docstring."""
    return _markdown(_docstring(cls).splitlines()[0])


def references(cls: type[PositionalEncoding]) -> str:
    """The class docstring's ``References:`` section as one line ("" when it has none)."""
    doc = _docstring(cls)
    match = re.search(r"^References:\n((?:[ \t]+\S.*\n?)+)", doc, re.M)
    return _markdown(match.group(1)) if match else ""


def hyperparameter_text(cls: type[PositionalEncoding]) -> str:
    """``name=default`` for every constructor keyword, as code spans."""
    items = pj.encodings.hyperparameters(cls).items()
    return ", ".join(f"`{name}={default!r}`" for name, default in items)


def table() -> str:
    """The Markdown table of every registered encoding, sorted by name."""
    lines = [
        "| name (class) | hook | what it is | reference | hyperparameters (defaults) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in pj.encodings.names():
        cls = pj.encodings.get_class(name)
        cells = [
            f"`{name}` (`{cls.__name__}`)",
            ", ".join(hooks(cls)) or "none",
            summary(cls),
            references(cls) or "—",
            hyperparameter_text(cls) or "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the current table.

    Raises:
      ValueError: when the markers are missing, repeated or out of order.
    """
    if (
        readme.count(START) != 1
        or readme.count(END) != 1
        or readme.index(START) > readme.index(END)
    ):
        raise ValueError(
            f"the README needs exactly one {START} line followed by one {END} line; "
            "add them where the table should go."
        )
    before, rest = readme.split(START)
    _, after = rest.split(END)
    return f"{before}{START}\n{table()}{END}{after}"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    with open(_README.value) as f:
        readme = f.read()
    updated = with_table(readme)
    if _CHECK.value:
        if updated != readme:
            print(
                f"{_README.value}: the encodings table is out of date; run "
                "python -m experiments.encodings_table",
                file=sys.stderr,
            )
            sys.exit(1)
        print(f"{_README.value}: the encodings table is up to date")
        return
    if updated != readme:
        with open(_README.value, "w") as f:
            f.write(updated)
    print(f"{_README.value}: {len(pj.encodings.names())} encodings")


if __name__ == "__main__":
    app.run(main)
