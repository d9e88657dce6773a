"""Every import points down (docs/architecture.md): core/ imports none of the project's other packages,
modules/ and datamodules/ import core/ only (and each package itself), and nothing imports experiments/
but experiments/ and the tests."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO

#: What each package may import of the project.
ALLOWED = {
    "core": {"core"},
    "modules": {"core", "modules"},
    "datamodules": {"core", "datamodules"},
    "experiments": {"core", "modules", "datamodules", "experiments"},
}


def project_imports(path) -> set[str]:
    """The project's top-level packages a file imports (anywhere in it, functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & set(ALLOWED)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    for path in sorted((REPO / package).rglob("*.py")):
        wrong = project_imports(path) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: imports must point down"
