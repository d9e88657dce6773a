"""A sweep's report, written by each worker when it ends (the last one writes the whole study's).

In ``lightning_logs/<experiment>/sweeps/<study>/``:

- ``best.yaml``: the best trial's config, as the worker ran it, for ``fit --config best.yaml``: the text
  the worker keeps in the database as the trial's system attribute ``config`` (so that a worker on any
  machine writes it; optuna-dashboard opens the same text as the trial's artifact ``trial_<n>.yaml``), or,
  in a study begun by older workers, its user attribute ``config``;
- ``trials.csv``: one row per trial (number, state, value, parameters named as the sweep file writes
  them, run folder, seconds), the table the worker also prints;
- ``optimization_history.png`` and ``param_importances.png``: Optuna's plots, also logged to TensorBoard
  in this folder (``sweep/...`` images, step = finished trials) with the table as text.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.files import write_atomic
from experiments.progress import significant
from experiments.sweep.space import Parameter
from experiments.sweep.trial import HOST, RUN

#: The MIME type of a trial's config artifact: optuna-dashboard serves an artifact with it, and a browser
#: shows text/plain in the page where it would download a YAML type.
CONFIG_TYPE = "text/plain"
#: The trial system attribute that holds its config text, for the report on any machine (optuna-dashboard
#: shows user attributes, not system ones); workers before the artifacts kept it as a user attribute.
CONFIG = "config"


def shown_value(value: Any) -> str:
    """A parameter's or metric's value for people: a float to 4 significant digits, others as they are."""
    return significant(value) if isinstance(value, float) else str(value)


def run_folder(trial: Any) -> str:
    """The trial's run folder: relative to here when it is below this folder on this machine, else
    ``host:path``; empty when the trial made none."""
    run = trial.user_attrs.get(RUN)
    if not run:
        return ""
    if trial.user_attrs.get(HOST, socket.gethostname()) != socket.gethostname():
        return f"{trial.user_attrs[HOST]}:{run}"
    with contextlib.suppress(ValueError):
        return str(Path(run).relative_to(Path.cwd().resolve()))
    return run


def trial_rows(trials: Sequence[Any], parameters: Sequence[Parameter], metric: str) -> list[dict[str, str]]:
    """The table's rows, one per trial in number order."""
    rows = []
    for trial in sorted(trials, key=lambda t: t.number):
        seconds = ""
        if trial.datetime_start and trial.datetime_complete:
            seconds = f"{(trial.datetime_complete - trial.datetime_start).total_seconds():.0f}"
        row = {"trial": str(trial.number), "state": trial.state.name.lower()}
        row[metric] = "" if trial.value is None else shown_value(trial.value)
        for parameter in parameters:
            value = trial.params.get(parameter.key)
            row[parameter.key] = "" if value is None else shown_value(value)
        row["run"] = run_folder(trial)
        row["seconds"] = seconds
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """``rows`` as aligned text columns."""
    if not rows:
        return "(no trials)"
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip()]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns).rstrip() for r in rows]
    return "\n".join(lines)


def trial_config(trial: Any) -> str | None:
    """The config that ``trial`` (frozen) ran: the system attribute the worker keeps it in, or the user
    attribute in which workers before it kept it; None for neither."""
    return trial.system_attrs.get(CONFIG) or trial.user_attrs.get(CONFIG)


def best_config(study: Any, metric: str) -> str | None:
    """The best complete trial's config (``trial_config``), with a header saying what it is; None before
    one completes."""
    try:
        best = study.best_trial
    except ValueError:
        return None
    config = trial_config(best)
    if not config:
        return None
    folder = run_folder(best)
    run = f" (run {folder})" if folder else ""
    header = (
        f"# The best trial of sweep study {study.study_name!r}: trial {best.number}, {metric} "
        f"{shown_value(best.value)}{run}.\n# Rerun it: python -m experiments fit --config <this file>\n"
    )
    return header + config


def plots(study: Any, metric: str) -> dict[str, Any]:
    """Optuna's figures of the study (matplotlib): the history, and the importances once computable."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as optuna_plots

    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        figures["optimization_history"] = optuna_plots.plot_optimization_history(
            study, target_name=metric
        ).figure
        # Importances need two complete trials and a parameter that varied; a study without is no error.
        with contextlib.suppress(Exception):
            figures["param_importances"] = optuna_plots.plot_param_importances(
                study, target_name=metric
            ).figure
    for figure in figures.values():
        figure.tight_layout()  # TensorBoard draws the canvas as it is: long parameter names were cut off
    return figures


def write_report(study: Any, parameters: Sequence[Parameter], metric: str, folder: Path) -> None:
    """Writes the report of ``study`` into ``folder`` and prints its table."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    folder.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(trials, parameters, metric)
    table = format_table(rows)
    print(f"sweep: study {study.study_name!r}, {len(trials)} trials:\n{table}", flush=True)
    if rows:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(folder / "trials.csv", text.getvalue())
    config = best_config(study, metric)
    if config is not None:
        write_atomic(folder / "best.yaml", config)
        print(f"sweep: best trial {study.best_trial.number}, {metric} {shown_value(study.best_value)}; "
              f"its config: {folder / 'best.yaml'}", flush=True)  # fmt: skip
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    from torch.utils.tensorboard import SummaryWriter

    board = SummaryWriter(str(folder))
    try:
        for name, figure in plots(study, metric).items():
            partial = folder / f".{name}.{os.getpid()}.png"
            figure.savefig(partial, dpi=110, bbox_inches="tight")
            os.replace(partial, folder / f"{name}.png")
            board.add_figure(f"sweep/{name}", figure, global_step=finished, close=True)
        markdown = "\n".join("| " + " | ".join(r.values()) + " |" for r in rows)
        heading = "| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n"
        board.add_text("sweep/trials", heading + markdown, global_step=finished)
    finally:
        board.close()
