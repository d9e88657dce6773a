"""Lesson configs by name: ``--config mnist_convnet`` runs the ``mnist_convnet.yaml`` shipped in the
``configs`` package, so an installed wheel runs lessons from any folder.

    python -m experiments fit --config mnist_convnet --config trainer/gpu --data.data_dir /path/to/dir
    python -m experiments sweep --config mnist_convnet --sweep mnist_convnet  # sweeps/mnist_convnet.yaml

A ``--config`` value that is an existing path is always used as it is, so a user's own file (or a
``configs/`` folder in the current directory, as in a checkout) wins over the packaged one, and a value
that names neither is left alone for the command's usual "file not found" error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import TypeVar

PACKAGE = "configs"
SUFFIX = ".yaml"
#: The options whose value is a config file (LightningCLI's ``-c, --config``; the sweep command's
#: ``--sweep``), with the package folder their names are looked up in.
OPTIONS = {"--config": "", "-c": "", "--sweep": "sweeps"}

Args = TypeVar("Args")


def packaged_configs() -> Path | None:
    """The folder of the installed ``configs`` package, or None when there is none on disk."""
    try:
        root = files(PACKAGE)
    except ModuleNotFoundError:
        return None
    # Wheels install unzipped, so this is a real folder; a zipped install would give a zipfile.Path,
    # whose members jsonargparse could not open by name: then names are simply not resolved.
    return root if isinstance(root, Path) and root.is_dir() else None


def lesson_names() -> list[str]:
    """The packaged lesson configs' names (``configs/*.yaml``, not the ``trainer/`` presets), sorted."""
    root = packaged_configs()
    return sorted(path.stem for path in root.glob(f"*{SUFFIX}")) if root is not None else []


def packaged_config(name: str) -> Path | None:
    """The packaged file that ``name`` means (``mnist_convnet``, ``mnist_convnet.yaml``, ``trainer/gpu``,
    ``configs/trainer/gpu.yaml``), or None when it names none."""
    root = packaged_configs()
    relative = PurePosixPath(name.replace("\\", "/"))
    if root is None or not name or relative.is_absolute() or ".." in relative.parts:
        return None  # a name never reaches outside the package
    if relative.parts[:1] == (PACKAGE,):
        relative = PurePosixPath(*relative.parts[1:])  # the checkout's spelling, configs/<name>.yaml
    if not relative.parts:
        return None
    if relative.suffix != SUFFIX:
        relative = relative.with_name(relative.name + SUFFIX)
    candidate = root.joinpath(*relative.parts)
    return candidate.resolve() if candidate.is_file() else None


def resolve_config_name(value: str, folder: str = "") -> str:
    """``value`` of one ``--config`` (or ``--sweep``, whose names are in the package's ``folder``
    ``sweeps``): the absolute path of the packaged file it names when it is not an existing path itself,
    else ``value`` unchanged."""
    try:
        if Path(value).exists():
            return value  # the user's file (or folder, which the command then reports) comes first
        name = value.replace("\\", "/")
        if folder and not name.startswith((f"{folder}/", f"{PACKAGE}/{folder}/")):
            name = f"{folder}/{name}"
        found = packaged_config(name)
    except OSError:
        return value  # e.g. inline YAML longer than a file name may be: not a name either
    return str(found) if found is not None else value


def config_options(args: Sequence[str]) -> Iterator[tuple[int, str, str]]:
    """``(index, option, value)`` of every config-file option in ``args`` (``--config X``, ``--config=X``,
    ``-c X``, ``--sweep X``): ``index`` is where the value is, the argument after the option or the
    ``--option=X`` argument itself."""
    for i, arg in enumerate(args):
        if arg in OPTIONS and i + 1 < len(args):
            yield i + 1, arg, args[i + 1]
        else:
            option, equals, value = arg.partition("=")
            if equals and option in OPTIONS:
                yield i, option, value


def resolve_config_names(args: Sequence[str]) -> list[str]:
    """``args`` with the value of every ``--config X``, ``--config=X`` and ``-c X`` that names a packaged
    config (see ``packaged_config``), and of ``--sweep X`` that names a packaged sweep file, replaced by
    that file's absolute path; all else unchanged."""
    resolved = [str(arg) for arg in args]
    for i, option, value in list(config_options(resolved)):
        name = resolve_config_name(value, OPTIONS[option])
        resolved[i] = name if resolved[i] == value else f"{option}={name}"
    return resolved


def resolve_main_args(args: Args) -> Args:
    """``resolve_config_names`` for ``main(args)``. ``None`` means the command line: ``sys.argv`` is
    rewritten in place and None returned, because LightningCLI warns when it is given ``args`` while
    ``sys.argv`` holds arguments too (and DDP's launcher starts the other ranks from ``sys.argv``). A list
    comes back resolved; a dict or Namespace of settings holds no file names and comes back as it is."""
    if args is None:
        sys.argv[1:] = resolve_config_names(sys.argv[1:])
        return args
    if isinstance(args, (list, tuple)):
        return resolve_config_names(args)  # type: ignore[return-value]
    return args
