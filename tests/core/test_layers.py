"""Every import points down (docs/architecture.md): core/ imports none of the project's other packages,
modules/ and datamodules/ import core/ only (and each package itself), and nothing imports experiments/
but experiments/ and the tests. And no files import each other round a loop, inside a package or
across packages.

The import graph is read from the source (``ast``): every ``import`` and ``from ... import`` of a
project module anywhere in a file, at module level, inside functions and under ``TYPE_CHECKING``
alike (an import inside a function still ties the two files together, only later), plus the
``__init__.py`` of every package a module is imported through (Python runs those first). What the
source does not spell as an import is not an edge: the classes ``core.registry`` imports by walking a
package, and classes named by a string (a config's ``class_path``; the sweep trial's callback, which
``experiments/cli.py`` finds by name so as not to import the sweep package that builds on it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: What each package may import of the project.
ALLOWED = {
    "core": {"core"},
    "modules": {"core", "modules"},
    "datamodules": {"core", "datamodules"},
    "experiments": {"core", "modules", "datamodules", "experiments"},
}


def imported_names(root: Path, relative: Path) -> set[str]:
    """The dotted names the file ``root / relative`` imports (anywhere in it, functions included); for
    ``from a import b`` both ``a`` and ``a.b`` (``b`` may be a module or a name defined in ``a``)."""
    found: set[str] = set()
    package = ".".join(relative.parent.parts)
    for node in ast.walk(ast.parse((root / relative).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package, up level - 1 packages
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def project_imports(path: Path) -> set[str]:
    """The project's top-level packages a file imports."""
    return {name.split(".")[0] for name in imported_names(REPO, path.relative_to(REPO))} & set(ALLOWED)


def module_file(root: Path, name: str) -> Path | None:
    """The file of the project module ``name`` under ``root`` (a package's ``__init__.py``), if any."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_graph(root: Path, packages: list[str]) -> dict[Path, set[Path]]:
    """Each ``.py`` file of ``packages`` under ``root`` with the project files it imports (relative to
    ``root``): the modules it names and the packages it imports them through."""
    graph: dict[Path, set[Path]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            names = set()
            for name in imported_names(root, relative):
                parts = name.split(".")
                names |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            targets = {module_file(root, name) for name in names if name.split(".")[0] in packages}
            graph[relative] = {t.relative_to(root) for t in targets if t is not None} - {relative}
    return graph


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """The import loops of ``graph``: each group of files that import each other round a loop (Tarjan's
    strongly connected components of more than one file), as one loop through them."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    found: list[list[Path]] = []

    def visit(node: Path) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(loop_through(graph, set(component)))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def loop_through(graph: dict[Path, set[Path]], component: set[Path]) -> list[Path]:
    """One loop of imports among ``component`` (files that all reach each other), first file repeated
    at the end: the shortest way back from the first file to itself."""
    start = min(component)
    paths = {target: [start, target] for target in graph[start] & component}
    while start not in paths:
        paths = {
            target: [*path, target]
            for node, path in sorted(paths.items())
            for target in sorted(graph[node] & component)
        } | paths
    return paths[start]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    for path in sorted((REPO / package).rglob("*.py")):
        wrong = project_imports(path) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}: imports must point down"


def test_no_import_cycle() -> None:
    loops = cycles(import_graph(REPO, sorted(ALLOWED)))
    shown = "; ".join(" -> ".join(p.as_posix() for p in loop) for loop in loops)
    assert not loops, f"files import each other round a loop: {shown}"


def test_the_check_finds_loops_inside_a_package_and_across_packages(tmp_path: Path) -> None:
    files = {
        # inside one package, the second import inside a function
        "alpha/__init__.py": "",
        "alpha/one.py": "from alpha.two import thing\n",
        "alpha/two.py": "def thing():\n    from alpha import one\n",
        # across packages, through a package's __init__
        "beta/__init__.py": "from beta.low import x\n",
        "beta/low.py": "import gamma.high\n",
        "gamma/__init__.py": "",
        "gamma/high.py": "from beta import something\n",
        # no loop: a file importing one that imports a third
        "gamma/plain.py": "import gamma.high\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    loops = cycles(import_graph(tmp_path, ["alpha", "beta", "gamma"]))
    shown = sorted(" -> ".join(p.as_posix() for p in loop) for loop in loops)
    assert shown == [
        "alpha/one.py -> alpha/two.py -> alpha/one.py",
        "beta/__init__.py -> beta/low.py -> gamma/high.py -> beta/__init__.py",
    ]
