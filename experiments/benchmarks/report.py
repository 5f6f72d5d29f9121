"""Where every benchmark's numbers go: one JSON file per run."""

import json
import os


def write_json(path: str, payload) -> None:
    """Writes ``payload`` to ``path`` as indented JSON, creating its directory."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
