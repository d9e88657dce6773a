"""``python -m experiments runs`` and ``python -m experiments diff``: the runs under a log root listed, and
two of them compared, read from their run folders whatever the logger wrote them with.

A run is a folder holding a manifest, ``run.json`` (experiments/manifest.py): TensorBoard's and CSV's
``lightning_logs/<experiment>/version_N``, MLflow's folders deeper under ``lightning_logs/mlruns``. A run
folder from before manifests existed (``config.yaml`` and ``checkpoints/``, no ``run.json``) is listed
too, with status ``unknown`` and only what its folder tells: its experiment, and its config for ``diff``.

- ``runs [EXPERIMENT] [--root lightning_logs] [--format table|json]``: one line per run, newest first:
  experiment, version (the run folder's name), status, epochs, the best monitored value, the test
  metrics, the start (UTC), the duration and the code version (the commit's first 7 digits, ``+dirty``
  when tracked files differed from it). Status is the manifest's (``running``, ``finished``,
  ``failed``, ``stopped``), except a ``running`` run whose process is gone from this host: ``died``
  (killed outright, the machine lost, out of memory).
- ``diff RUN RUN [--root lightning_logs] [--format table|json]``: the configs' differences as flat
  dotted keys (``model.optimizer.lr``, no ``init_args``) with both values, the results side by side,
  and the lines of the environment (host, versions, accelerator, command) that differ. RUN is a run
  folder (a path), ``<experiment>/<version>`` under the root, or ``<experiment>:last`` (its newest run).

Numbers are printed to 4 significant digits; ``--format json`` gives them unrounded, for scripts:

- ``runs``: a list, newest first, of objects with the keys ``experiment``, ``version``, ``path``,
  ``status``, ``signal`` (what stopped it), ``error`` (why it failed), ``epochs``, ``global_step``,
  ``monitor``, ``mode``, ``best``, ``best_checkpoint``, ``test`` (metric to value), ``evaluations``
  (the manifest's), ``start``, ``end`` (ISO 8601, UTC), ``duration_s``, ``code`` (the short commit with
  ``+dirty``, or null), ``commit``, ``dirty``, ``host``, ``command``; a value the run did not record is
  null.
- ``diff``: an object with ``runs`` (the two runs, as ``runs`` gives them), ``config`` (each differing
  key to its two values; null where a run's config lacks the key), ``results`` (each result's name to its
  two values) and ``environment`` (each differing line to its two values).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from core.errors import ExperimentError
from experiments.manifest import MANIFEST, pid_alive, read_manifest
from experiments.progress import significant
from experiments.runs import LOG_ROOT

#: Values longer than this are printed one per line in ``diff``, not side by side.
WIDE = 40
#: Folders of a run that hold no other run: not walked into.
NOT_RUNS = {"checkpoints", "figures", "metrics", "params", "tags", "__pycache__"}


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes end as the command's one ``error:`` line (experiments/main.py)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ExperimentError(f"{self.prog}: {message} (see --help)")


def _walk(root: Path) -> Iterator[Path]:
    """Folders under ``root`` that are runs: those with a manifest, and manifest-less ones with
    ``config.yaml`` and ``checkpoints/``. A run's own sub-folders (``test/``, ...) are not walked."""
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if MANIFEST in files or ("config.yaml" in files and "checkpoints" in subfolders):
            yield here
            subfolders[:] = []
        else:
            subfolders[:] = sorted(s for s in subfolders if s not in NOT_RUNS and not s.startswith("."))


def short_code(code: Sequence[Mapping[str, Any]] | None) -> str | None:
    """``046ad06+dirty`` for the project's checkout, and ``model 1a2b3c4`` for the model's own one."""
    parts = []
    for entry in code or []:
        commit = entry.get("commit")
        text = f"{commit[:7]}{'+dirty' if entry.get('dirty') else ''}" if commit else "unknown"
        parts.append(text if entry.get("role", "project") == "project" else f"model {text}")
    return " ".join(parts) or None


def _mlflow_experiment_name(experiment_folder: Path) -> str | None:
    try:
        text = (experiment_folder / "meta.yaml").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^name: (.+?)\s*$", text, re.M)
    return match.group(1) if match else None


def run_record(folder: Path) -> dict[str, Any]:
    """What ``runs`` shows of the run in ``folder`` (the keys in the module's docstring), and ``_order``,
    to sort by."""
    manifest = read_manifest(folder)
    if manifest is None:
        experiment = _mlflow_experiment_name(folder.parent) or folder.parent.name
        manifest = {"experiment": experiment, "status": "unknown"}
        order = (folder / "config.yaml").stat().st_mtime
    else:
        order = _timestamp(manifest.get("start"))
    status = manifest.get("status")
    if status == "running" and manifest.get("host") == socket.gethostname():
        pid = manifest.get("pid")
        if isinstance(pid, int) and not pid_alive(pid):
            status = "died"
    code = manifest.get("code") or []
    project = next((c for c in code if c.get("role", "project") == "project"), {})
    evaluations = manifest.get("evaluations") or {}
    return {
        "experiment": manifest.get("experiment"),
        # An MLflow run's folder may be its artifact folder: the run is named by its id, the folder above.
        "version": folder.parent.name if folder.name == "artifacts" else folder.name,
        "path": str(folder.resolve()),
        "status": status,
        "signal": manifest.get("signal"),
        "error": manifest.get("error"),
        "epochs": manifest.get("epochs"),
        "global_step": manifest.get("global_step"),
        "monitor": manifest.get("monitor"),
        "mode": manifest.get("mode"),
        "best": manifest.get("best"),
        "best_checkpoint": manifest.get("best_checkpoint"),
        "test": (evaluations.get("test") or {}).get("metrics") or {},
        "evaluations": evaluations,
        "start": manifest.get("start"),
        "end": manifest.get("end"),
        "duration_s": manifest.get("duration_s"),
        "code": short_code(code),
        "commit": project.get("commit"),
        "dirty": project.get("dirty"),
        "host": manifest.get("host"),
        "command": manifest.get("command"),
        "_order": order,
    }


def _timestamp(text: Any) -> float:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return 0.0


def find_runs(root: Path, experiment: str | None = None) -> list[dict[str, Any]]:
    """The runs under ``root`` (of ``experiment`` only, when given), newest first."""
    if not root.is_dir():
        raise ExperimentError(
            f"--root {root}: no such folder; run the command where the runs' lightning_logs/ is, or give "
            "--root <folder>"
        )
    runs = [run_record(folder) for folder in _walk(root)]
    if experiment is not None:
        chosen = [run for run in runs if run["experiment"] == experiment]
        if not chosen:
            names = sorted({str(run["experiment"]) for run in runs})
            there = f"experiments there: {', '.join(names)}" if names else "there are no runs there"
            raise ExperimentError(f"no runs of experiment {experiment!r} under {root} ({there})")
        runs = chosen
    return sorted(runs, key=lambda run: run["_order"], reverse=True)


def number(value: Any) -> str:
    """A value as printed: numbers to 4 significant digits, nothing as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return significant(value) if math.isfinite(value) else str(value)
    return str(value)


def duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second:02d} s"
    hours, minute = divmod(minutes, 60)
    return f"{hours} h {minute:02d} min"


def started(text: Any) -> str:
    """``2026-12-05 14:56:46`` (UTC) from the manifest's ISO time."""
    return str(text)[:19].replace("T", " ") if text else "-"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns, the first row the header; the last column is not padded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def status_text(run: Mapping[str, Any]) -> str:
    if run["status"] == "stopped" and run.get("signal"):
        return f"stopped ({run['signal']})"
    return str(run["status"] or "-")


def best_text(run: Mapping[str, Any]) -> str:
    return f"{run['monitor']} {number(run['best'])}" if run.get("monitor") else "-"


def metrics_text(metrics: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {number(value)}" for name, value in sorted(metrics.items())) or "-"


def runs_table(runs: Sequence[Mapping[str, Any]]) -> str:
    header = ["experiment", "version", "status", "epochs", "best", "test", "started (UTC)", "duration"]
    header.append("code")
    rows = [
        [
            str(run["experiment"]),
            str(run["version"]),
            status_text(run),
            number(run["epochs"]),
            best_text(run),
            metrics_text(run["test"]),
            started(run["start"]),
            duration(run["duration_s"]),
            run["code"] or "-",
        ]
        for run in runs
    ]
    return table([header, *rows])


def public(run: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in run.items() if not key.startswith("_")}


def runs_command(args: Sequence[str]) -> None:
    parser = Parser(
        prog="python -m experiments runs",
        description="The runs under the log root, newest first: status, epochs, best monitored value, test "
        "metrics, start, duration and code version, read from each run folder's run.json. "
        "--format json gives every field unrounded (keys: experiments/history.py).",
    )
    parser.add_argument("experiment", nargs="?", help="only this experiment's runs (e.g. mnist_convnet)")
    parser.add_argument("--root", default=LOG_ROOT, help="the folder holding the runs (default: %(default)s)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="default: %(default)s")
    options = parser.parse_args(list(args))
    runs = find_runs(Path(options.root), options.experiment)
    if options.format == "json":
        print(json.dumps([public(run) for run in runs], indent=2))
    elif not runs:
        print(f"no runs under {options.root}")
    else:
        print(runs_table(runs))


def resolve_run(spec: str, root: Path) -> Path:
    """The run folder ``spec`` names: a folder, ``<experiment>/<version>`` under ``root``, or
    ``<experiment>:last``."""
    experiment, colon, which = spec.rpartition(":")
    if colon and which == "last" and experiment and "/" not in which:
        runs = find_runs(root, experiment) if root.is_dir() else []
        if runs:
            return Path(runs[0]["path"])
    for folder in (Path(spec), root / spec):
        if folder.is_dir() and ((folder / MANIFEST).is_file() or (folder / "config.yaml").is_file()):
            return folder
    if root.is_dir() and "/" in spec:
        name, _, version = spec.rpartition("/")
        for run in find_runs(root):
            if run["experiment"] == name and run["version"] == version:
                return Path(run["path"])
    what = "no such folder" if not Path(spec).exists() else "not a run folder (no run.json or config.yaml)"
    raise ExperimentError(
        f"{spec}: {what}; give a run folder, <experiment>/<version> under {root} or <experiment>:last "
        "(`python -m experiments runs` lists them)"
    )


def flat_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """A ``config.yaml``'s settings as dotted keys without ``init_args``, each class by its path:
    ``{"model": "modules.LinearRegression", "model.optimizer.lr": 0.1}``."""
    if not isinstance(config, Mapping):
        return {prefix: config}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        if key == "class_path":
            flat[prefix] = value
        elif isinstance(value, Mapping) and value:
            flat.update(flat_config(value, name))
        else:
            flat[name] = value
    return flat


def read_config(folder: Path) -> dict[str, Any]:
    try:
        return flat_config(yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {})
    except (OSError, yaml.YAMLError):
        return {}


def environment(folder: Path) -> dict[str, Any]:
    """The manifest's environment lines: host, user, command, versions, accelerator, the code's repos."""
    manifest = read_manifest(folder) or {}
    lines: dict[str, Any] = {key: manifest.get(key) for key in ("host", "user", "command", "cwd", "model")}
    for section in ("versions", "accelerator"):
        for key, value in (manifest.get(section) or {}).items():
            lines[f"{section}.{key}"] = value
    for entry in manifest.get("code") or []:
        role = entry.get("role", "project")
        lines[f"code.{role}.repo"] = entry.get("repo")
        lines[f"code.{role}.branch"] = entry.get("branch")
    return lines


def differing(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, list[Any]]:
    keys = list(first) + [key for key in second if key not in first]
    return {key: [first.get(key), second.get(key)] for key in keys if first.get(key) != second.get(key)}


def results(run: Mapping[str, Any]) -> dict[str, Any]:
    """The results ``diff`` puts side by side."""
    lines: dict[str, Any] = {"status": status_text(run), "error": run["error"], "epochs": run["epochs"]}
    lines["global_step"] = run["global_step"]
    if run.get("monitor"):
        lines[f"{run['monitor']} (best)"] = run["best"]
    for label, evaluation in sorted((run.get("evaluations") or {}).items()):
        for name, value in sorted((evaluation.get("metrics") or {}).items()):
            lines[name if label == "test" else f"{name} ({label})"] = value
    lines.update(duration_s=run["duration_s"], start=run["start"], code=run["code"])
    lines["host"] = run["host"]
    return lines


def diff_command(args: Sequence[str]) -> None:
    parser = Parser(
        prog="python -m experiments diff",
        description="Two runs compared: their configs' differences (flat keys, both values), their results "
        "side by side and the environment lines that differ. RUN: a run folder, <experiment>/<version> "
        "under --root, or <experiment>:last. --format json: keys in experiments/history.py.",
    )
    parser.add_argument(
        "runs", nargs=2, metavar="RUN", help="a run folder, <experiment>/<version> or <experiment>:last"
    )
    parser.add_argument("--root", default=LOG_ROOT, help="the folder holding the runs (default: %(default)s)")
    parser.add_argument("--format", choices=("table", "json"), default="table", help="default: %(default)s")
    options = parser.parse_args(list(args))
    root = Path(options.root)
    folders = [resolve_run(spec, root) for spec in options.runs]
    runs = [run_record(folder) for folder in folders]
    config = differing(*[read_config(folder) for folder in folders])
    side_by_side = [results(run) for run in runs]
    names = list(side_by_side[0]) + [key for key in side_by_side[1] if key not in side_by_side[0]]
    # How each run ended first, its metrics (either run's) next, when and with what code it ran last.
    tail = ["duration_s", "start", "code", "host"]
    names = [name for name in names if name not in tail] + tail
    result_lines = {name: [side.get(name) for side in side_by_side] for name in names}
    result_lines = {name: values for name, values in result_lines.items() if values != [None, None]}
    env = differing(*[environment(folder) for folder in folders])
    if options.format == "json":
        document = {"runs": [public(run) for run in runs], "config": config, "results": result_lines}
        print(json.dumps({**document, "environment": env}, indent=2))
        return
    labels = [f"{run['experiment']}/{run['version']}" for run in runs]
    if labels[0] == labels[1]:
        labels = [run["path"] for run in runs]
    print(f"config: {len(config)} difference{'s' if len(config) != 1 else ''}")
    if config:
        print(_indented(table([["key", *labels], *[[key, *map(_value, v)] for key, v in config.items()]])))
    print("results")
    shown = {"duration_s": ("duration", duration), "start": ("started (UTC)", started)}
    rows = [
        [shown[name][0], *map(shown[name][1], values)] if name in shown else [name, *map(_value, values)]
        for name, values in result_lines.items()
    ]
    print(_indented(table([["", *labels], *rows])))
    print(f"environment: {len(env)} difference{'s' if len(env) != 1 else ''}")
    short = {key: values for key, values in env.items() if max(len(_value(v)) for v in values) <= WIDE}
    if short:
        print(_indented(table([["", *labels], *[[key, *map(_value, v)] for key, v in short.items()]])))
    for key, values in env.items():
        if key not in short:  # a command line: one line per run, not a column each
            print(f"  {key}")
            print(
                _indented(
                    _indented(table([[label, _value(v)] for label, v in zip(labels, values, strict=True)]))
                )
            )


def _value(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return number(value)


def _indented(text: str) -> str:
    return "\n".join(f"  {line}" for line in text.splitlines())


def main(args: Sequence[str]) -> None:
    """``runs ...`` or ``diff ...`` (the subcommand first)."""
    command, rest = args[0], args[1:]
    try:
        (runs_command if command == "runs" else diff_command)(rest)
        sys.stdout.flush()
    except BrokenPipeError:
        # Output piped into `head` that stopped reading: not an error of the command. Python's advice:
        # point stdout at devnull so that the flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
