"""What the benchmark scripts print alike: the machine line that heads their output, and markdown tables
for ``RESULTS.md``. A script run as ``python benchmarks/<name>.py`` has this folder on ``sys.path``, so
it imports this module as ``_common``."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """``# <host> <processor>, <n> cores``: how a benchmark's output begins (its settings follow)."""
    return f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def markdown_table(columns: dict[str, str]) -> tuple[list[str], str]:
    """The header lines of a markdown table whose ``columns`` map titles to ``str.format`` fields, and the
    format of one row (``row.format(**values)``)."""
    header = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return header, "| " + " | ".join(columns.values()) + " |"
