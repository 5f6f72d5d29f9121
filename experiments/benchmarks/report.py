"""Where every benchmark's numbers go: one JSON file per run, with the memory setup."""

import json
import os

from experiments.memory_pages import memory_setup, report_small_pages


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` and the memory setup (:mod:`experiments.memory_pages`) to ``path``
    as indented JSON, creating its directory; says on stderr when small pages slow the run."""
    report_small_pages()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"memory_setup": memory_setup(), **payload}, f, indent=2)
