"""Where every benchmark's numbers go: one JSON file per run, with the memory setup."""

import json
import os
import sys

#: The glibc setting that gives XLA's per-step temporaries transparent huge pages.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"

_THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"


def transparent_hugepages() -> str | None:
    """The kernel's transparent huge page mode ("always", "madvise", "never"), or None."""
    try:
        with open(_THP_SETTING) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def memory_setup() -> dict:
    """How this process gets memory pages, which decides a large share of a CPU step.

    XLA on CPU allocates each execution's temporaries afresh (hundreds of MB for the
    training step) and frees them after it. With 4 KiB pages the kernel then faults in and
    zeroes every page on every step; with huge pages it does so 512 times less often
    (experiments/benchmarks/NOTES.md, "Memory pages").
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    thp = transparent_hugepages()
    asked_for = HUGE_PAGES_TUNABLE in tunables
    return {
        "glibc_tunables": tunables or None,
        "transparent_hugepages": thp,
        "huge_pages_for_xla": thp == "always" or (thp == "madvise" and asked_for),
    }


def write_json(path: str, payload: dict) -> None:
    """Writes ``payload`` and the memory setup to ``path`` as indented JSON (creating its
    directory), and says on stderr when small pages will slow the numbers down."""
    setup = memory_setup()
    if setup["transparent_hugepages"] == "madvise" and not setup["huge_pages_for_xla"]:
        print(
            f"note: transparent huge pages are 'madvise' only and GLIBC_TUNABLES lacks "
            f"{HUGE_PAGES_TUNABLE}; XLA's temporaries get 4 KiB pages (the Makefile sets it).",
            file=sys.stderr,
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"memory_setup": setup, **payload}, f, indent=2)
