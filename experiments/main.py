"""The entry point of ``python -m experiments`` and the ``experiments`` script: the subcommand runs, and a
user's mistake ends as one line.

- ``fit``, ``validate``, ``test``, ``predict``: ``ExperimentCLI`` (experiments/cli.py), looked up on its
  module when the command runs, so that a test can put a subclass in its place;
- ``sweep``: the hyperparameter search (experiments/sweep/), imported only for it (Optuna is an extra);
- ``runs`` and ``diff``: the runs listed from their folders' manifests, and two runs compared
  (experiments/history.py; the manifest, ``run.json``, is experiments/manifest.py's);
- ``export``: a trained checkpoint as an ONNX or ``torch.export`` file, checked against the eager model
  (experiments/export.py; onnx and onnxruntime are an extra);
- ``tune``: Lightning's learning-rate finder and batch-size scaler on a config, written as ``tuned.yaml``
  (experiments/tune.py);
- a mistake (missing file, unknown class or key, wrong type, a full disk, a compiler failure, a size that
  needs more memory than there is) ends with
  one ``error:`` line on stderr and exit status 2; ``EXPERIMENTS_DEBUG=1`` shows the traceback instead.
  Lightning's own messages go to stdout (experiments/progress.py), so stderr holds only that line;
- ``--print_shtab``/``--print_completion`` are refused in one line (see ``refuse_shell_completion``).
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
from typing import Any

from lightning.pytorch.cli import ArgsType

from core.errors import ExperimentError
from experiments import cli
from experiments.compile import compile_failure
from experiments.configs import resolve_main_args
from experiments.manifest import note_command
from experiments.messages import USER_ERRORS, check_config_files, one_line
from experiments.progress import lightning_output_to_stdout

DEBUG_VARIABLE = "EXPERIMENTS_DEBUG"
DESCRIPTION = (
    "Train and evaluate the lessons' experiments (fit, validate, test, predict). `python -m experiments "
    "sweep --help`: the hyperparameter search, with Optuna. `python -m experiments export --help`: a "
    "trained model as ONNX or torch.export, verified; `python -m experiments tune --help`: the learning "
    "rate and batch size found by Lightning's Tuner. `python -m experiments runs --help`: the runs, "
    "with their status, results and code version; `python -m experiments diff --help`: two runs compared."
)


def refuse_shell_completion(args: list[str]) -> None:
    """One line instead of jsonargparse's completion flags. Its generated bash script for this command is
    114 MB and takes 18 s to write and 3 s to load in every shell (it expands the arguments of every
    class a flag can take, torch's included), so the command does not offer one."""
    flags = [a for a in args if a.split("=")[0] in ("--print_shtab", "--print_completion")]
    if flags:
        raise ExperimentError(
            f"{flags[0].split('=')[0]}: this command has no shell completion (jsonargparse's script for "
            "it is over 100 MB); see `python -m experiments fit --help` and `--model.help <class>`"
        )


def sweep(args: list[str]) -> None:
    """``python -m experiments sweep``; Optuna is an extra (``pip install -e ".[sweep]"``)."""
    try:
        from experiments.sweep import command
    except ImportError as error:
        if error.name not in ("optuna", "sqlalchemy"):
            raise
        raise ExperimentError(
            f'the sweep command needs {error.name}, which is not installed: pip install -e ".[sweep]"'
        ) from None
    command.main(args)


def out_of_memory(error: BaseException) -> str | None:
    """One line for a run that asked for more memory than there is (a size or count the user set: the
    data's, a batch's, an image's), else None. torch reports a CPU allocation that fails as a RuntimeError
    ("can't allocate memory"), a GPU's as ``torch.OutOfMemoryError``, and a tensor whose size does not
    fit in 64 bits as "Storage size calculation overflowed"."""
    text = str(error).strip()
    memory = isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
    too_big = ("can't allocate memory", "Storage size calculation overflowed")
    if not memory and not (isinstance(error, RuntimeError) and any(t in text for t in too_big)):
        return None
    reason = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text.splitlines()[0] if text else "")
    return (
        f"out of memory ({reason or type(error).__name__}): the settings ask for more than this machine "
        "has; lower a size or count (--data.batch_size, the data's sizes, --model's widths)"
    )


def _quiet_full_disk_in_threads(hook: Any = threading.excepthook) -> Any:
    """A ``threading.excepthook`` that says nothing of a background thread's write meeting a full disk
    (TensorBoard's event writer, a figure's): the run's own next write meets it too and the command ends
    with its one line; a thread's traceback before that line is noise. Anything else goes to ``hook``."""

    def quiet(args: threading.ExceptHookArgs) -> None:
        error = args.exc_value
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return
        hook(args)

    return quiet


def main(args: ArgsType = None) -> None:
    """Run the command: ``args`` as on the command line (None: ``sys.argv``)."""
    lightning_output_to_stdout()
    threading.excepthook = _quiet_full_disk_in_threads()
    given: list[str] = []
    try:
        typed = sys.argv[1:] if args is None else args
        if isinstance(typed, (list, tuple)):
            note_command(typed)  # the command line as typed, before config names are resolved
        args = resolve_main_args(args)
        given = sys.argv[1:] if args is None else [str(a) for a in args]
        refuse_shell_completion(given)
        check_config_files(given)
        if given[:1] == ["sweep"]:
            sweep(given[1:])
        elif given[:1] == ["export"]:
            from experiments import export  # only this command reads onnx and onnxruntime

            export.main(given[1:])
        elif given[:1] == ["tune"]:
            from experiments import tune

            tune.main(given[1:])
        elif given[:1] in (["runs"], ["diff"]):
            from experiments import history  # only these commands read runs

            history.main(given)
        else:
            cli.ExperimentCLI(args=args, parser_kwargs={**cli.PARSER_KWARGS, "description": DESCRIPTION})
    except Exception as error:
        disk_full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
        compiler = compile_failure(error) or out_of_memory(error)
        known = isinstance(error, USER_ERRORS) or disk_full or compiler is not None
        if not known or os.environ.get(DEBUG_VARIABLE):
            raise
        print(f"error: {compiler or one_line(error, given)}", file=sys.stderr)
        sys.exit(2)
