"""The README's "Where each lesson lives" table is true: a row per config, every file it names exists, the
classes a config names are defined in its row's files, what they import is in the row (or the shared
row), and no lesson file is missing from the table. A lesson's files are then found from its name."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CONFIGS, REPO

SECTION = "## Where each lesson lives"
SHARED = "shared"
#: The packages whose classes a lesson's files define; a class from elsewhere (torch, the command's
#: logger) is not a lesson's file.
LESSON_PACKAGES = ("modules", "datamodules")


class Row:
    """One row of the table: the config's lesson name (or ``shared``) and the files of each column."""

    def __init__(self, cells: list[str]) -> None:
        config, module, data, tests = ([*re.findall(r"`([^`]+)`", cell)] for cell in cells)
        self.name = Path(config[0]).stem if config else cells[0].strip()
        self.config, self.module, self.data, self.tests = config, module, data, tests

    @property
    def files(self) -> list[str]:
        return [*self.module, *self.data, *self.tests]


def table() -> dict[str, Row]:
    """The table's rows by lesson name, read from README.md."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    lines = text.split(SECTION, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    body = []
    for line in lines[start + 2 :]:  # past the header and the |---| line
        if not line.startswith("|"):
            break
        body.append(line)
    rows: dict[str, Row] = {}
    for line in body:
        cells = line.strip().strip("|").split("|")
        assert len(cells) == 4, f"a row of the table has {len(cells)} cells, not 4: {line}"
        row = Row(cells)
        assert row.name not in rows, f"two rows for {row.name}"
        rows[row.name] = row
    return rows


ROWS = table()
LESSONS = sorted(path.stem for path in CONFIGS.glob("*.yaml"))


def class_paths(node: Any) -> Iterator[str]:
    """Every ``class_path`` in a loaded config, nested ones (callbacks, optimizers) included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "class_path" and isinstance(value, str):
                yield value
            else:
                yield from class_paths(value)
    elif isinstance(node, list):
        for item in node:
            yield from class_paths(item)


def defining_file(class_path: str) -> str:
    """The repository-relative file that defines the class ``class_path`` names."""
    module, name = class_path.rsplit(".", 1)
    path = Path(inspect.getfile(getattr(importlib.import_module(module), name))).resolve()
    # A library's class (torch's optimizers) may live outside the repository, or in its .venv.
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.as_posix()


def imported_lesson_files(path: str) -> set[str]:
    """The files of ``modules/`` and ``datamodules/`` that ``path`` imports, at the top or inside a
    function (a private helper imported when needed), as repository-relative paths."""
    found = set()
    for node in ast.walk(ast.parse((REPO / path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if "." in node.module else []
            # `from modules import X` takes a class the package re-exports: X's own file.
            if node.module in LESSON_PACKAGES:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
                found |= {defining_file(name) for name in names}
                continue
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in LESSON_PACKAGES and "." in name:
                found.add(name.replace(".", "/") + ".py")
    return found


def test_every_config_has_one_row_and_nothing_else_does() -> None:
    rows = {name for name in ROWS if name != SHARED}
    assert not set(LESSONS) - rows, f"configs with no row in README.md: {sorted(set(LESSONS) - rows)}"
    assert not rows - set(LESSONS), f"rows of README.md with no config: {sorted(rows - set(LESSONS))}"
    assert SHARED in ROWS, f"README.md's table has no {SHARED!r} row"
    for name in LESSONS:
        assert ROWS[name].config == [f"configs/{name}.yaml"], ROWS[name].config


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_file_named_exists_in_its_column(name: str) -> None:
    row = ROWS[name]
    for path in row.files:
        assert (REPO / path).is_file(), f"{name}: {path} does not exist"
    assert all(path.startswith(("modules/", "experiments/")) for path in row.module), row.module
    assert all(path.startswith("datamodules/") for path in row.data), row.data
    assert all(path.startswith("tests/") and Path(path).name.startswith("test_") for path in row.tests)
    if name != SHARED:
        assert row.module and row.data, f"{name}: a lesson has a module and data"
        # The end-to-end test first: the file that runs the lesson's config.
        assert row.tests[0].startswith("tests/lessons/test_"), f"{name}: {row.tests}"


@pytest.mark.parametrize("name", LESSONS)
def test_the_classes_a_config_names_are_defined_in_its_row(name: str) -> None:
    row, shared = ROWS.get(name), ROWS.get(SHARED)
    assert row is not None and shared is not None, f"README.md's table lacks a row for {name} or {SHARED}"
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text(encoding="utf-8"))
    # The model and the data: in the row itself, where someone looking for the lesson reads.
    model = defining_file(config["model"]["class_path"])
    data = defining_file(config["data"]["class_path"])
    assert model in row.module, f"{name}: its model is defined in {model}, not in {row.module}"
    assert data in row.data, f"{name}: its datamodule is defined in {data}, not in {row.data}"
    # Its callbacks, and everything those files import from the lesson packages: in its row or shared.
    listed = {*row.module, *row.data, *shared.module, *shared.data}
    every_listed = {path for other in ROWS.values() for path in other.files}
    files = {defining_file(path) for path in class_paths(config)}
    files = {path for path in files if path.split("/")[0] in LESSON_PACKAGES or path in every_listed}
    seen: set[str] = set()
    while files:
        path = files.pop()
        seen.add(path)
        files |= imported_lesson_files(path) - seen
    missing = sorted(seen - listed)
    assert not missing, f"{name}: its classes come from {missing}, not in its row nor the shared one"


def test_every_lesson_file_and_test_is_in_the_table() -> None:
    named = {path for row in ROWS.values() for path in row.files}
    files = [
        path
        for package in LESSON_PACKAGES
        for path in (REPO / package).rglob("*")
        if path.is_file() and path.name != "__init__.py" and "__pycache__" not in path.parts
    ]
    for folder in ("tests/lessons", "tests/modules", "tests/datamodules"):
        files += (REPO / folder).glob("test_*.py")
    unlisted = sorted(
        relative for path in files if (relative := path.relative_to(REPO).as_posix()) not in named
    )
    assert not unlisted, f"files in no row of README.md's {SECTION!r} table: {unlisted}"
