"""Where every benchmark's numbers go: one JSON file per run, with the memory setup."""

import json
import os
import sys

from experiments.memory_pages import memory_setup, small_pages_note


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` and the memory setup (:mod:`experiments.memory_pages`) to ``path``
    as indented JSON, creating its directory; says on stderr when small pages slow the run."""
    note = small_pages_note()
    if note:
        print(note, file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"memory_setup": memory_setup(), **payload}, f, indent=2)
