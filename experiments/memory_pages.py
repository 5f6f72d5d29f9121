"""Whether XLA's per-step temporaries get huge pages, and what to set when they do not.

XLA on CPU allocates each execution's temporaries afresh (hundreds of MB for the training
step) and frees them after it. With 4 KiB pages the kernel then faults in and zeroes every
page on every step; with transparent huge pages it does so 512 times less often. Where
the kernel grants huge pages only on request ("madvise" mode), glibc asks for them when
``GLIBC_TUNABLES`` contains :data:`HUGE_PAGES_TUNABLE` at process start
(experiments/benchmarks/NOTES.md, "Memory pages").
"""

import os
import sys

#: The glibc setting that makes malloc ask for transparent huge pages.
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
    """The tunable, the kernel's mode, and whether XLA's temporaries get huge pages."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    thp = transparent_hugepages()
    asked_for = HUGE_PAGES_TUNABLE in tunables
    return {
        "glibc_tunables": tunables or None,
        "transparent_hugepages": thp,
        "huge_pages_for_xla": thp == "always" or (thp == "madvise" and asked_for),
    }


def small_pages_note() -> str | None:
    """A one-line note when huge pages are available on request but not requested."""
    setup = memory_setup()
    if setup["transparent_hugepages"] != "madvise" or setup["huge_pages_for_xla"]:
        return None
    return (
        "note: transparent huge pages are 'madvise' only and GLIBC_TUNABLES lacks "
        f"{HUGE_PAGES_TUNABLE}, so XLA's temporaries get 4 KiB pages (a CPU training step "
        "runs ~1.4x slower); start Python with GLIBC_TUNABLES="
        f"{HUGE_PAGES_TUNABLE} (the Makefile does)."
    )


def report_small_pages() -> None:
    """Prints :func:`small_pages_note` to stderr when there is one."""
    note = small_pages_note()
    if note:
        print(note, file=sys.stderr)
