"""Finding a package's classes without a list to keep: ``modules/`` and ``datamodules/`` register every
lesson class this way, so a new lesson is a new file and nothing else.

``register_package`` imports each file of a package (files whose name starts with ``_`` are the
package's private helpers and are left alone: nothing heavy is imported before it is used) and puts
every public class a file defines into the package's namespace. The command then knows them by name
(``--model SineRNN``), and ``from modules import SineRNN`` works, as with a hand-written ``__init__``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Any


def register_package(package: str, path: Iterable[str], namespace: dict[str, Any]) -> list[str]:
    """Import every public file of ``package`` (its ``__path__``) and add each public class defined in
    one to ``namespace`` (the package's ``globals()``); returns their names, sorted, for ``__all__``.

    Two files defining a class of the same name would make ``--model <name>`` ambiguous: an error.
    """
    found: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for name, value in vars(module).items():
            if name.startswith("_") or not isinstance(value, type) or value.__module__ != module.__name__:
                continue
            if name in found:
                both = f"{found[name]} and {module.__name__}"
                raise ImportError(f"{package}: class {name} is defined in both {both}")
            found[name] = module.__name__
            namespace[name] = value
    return sorted(found)
