"""Whole-file writes for what runs leave behind as text (a manifest, a report, a predictions table, a tuned
config): a reader never sees half a file, and a failed write leaves no temporary file behind."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all, as checkpoints are: a reader (another sweep worker,
    ``runs``) never sees half a file (a run's ``run.json``, a sweep's ``best.yaml`` and ``trials.csv``)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
