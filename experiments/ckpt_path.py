"""What ``--ckpt_path`` means: the checkpoint it names, checked before Lightning loads it, and the run
that keeps the work done from it.

- ``last`` and ``best`` are the newest run of the same experiment that has such a checkpoint
  (``find_checkpoint``; the runs are those of experiments/runs.py, so never another experiment's);
- a file that is empty, cut short, not written by ``torch.save`` or not a Lightning checkpoint is one
  error line naming it (``read_checkpoint``), as is another lesson's checkpoint; a configured argument
  the checkpoint overrides gets a ``note:`` line (``check_checkpoint_model``);
- no checkpoint runs code: every one is read weights-only (``torch.load(weights_only=True)``, which
  unpickles tensors and plain values only), here and in Lightning (the command passes
  ``weights_only=True`` to the subcommand and refuses ``--weights_only false``). A file holding other
  objects, which unpickling could turn into a command, is one error line naming it and the objects, with
  a way to re-save it if the user trusts it (``untrusted_checkpoint``); so is the SLURM requeue
  checkpoint a fit resumes from without ``--ckpt_path`` (``hpc_resume_checkpoint``), checked here before
  anything is built;
- a checkpoint of one of the experiment's runs keeps its work in that run: ``fit`` resumes in the same
  ``version_N``, and ``validate``, ``test`` and ``predict`` write into ``version_N/<subcommand>``, logged
  at the checkpoint's training step (``checkpoint_step``), so the test accuracy sits at the end of the
  run's curves. A checkpoint from anywhere else starts a new run.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jsonargparse import Namespace
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from core.errors import ExperimentError
from experiments.checkpoint_io import remove_stale_temporaries
from experiments.links import DATA_TO_MODEL
from experiments.preemption import hpc_resume_checkpoint
from experiments.runs import RunLayout, experiment_name


def unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The objects (``module.name``) in the checkpoint at ``path`` that a weights-only load refuses: read
    from its pickle's instructions without running them; else the one torch's ``error`` names."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the old, non-zip format, or instructions the scan does not know
        names = []
    return sorted(set(names)) or re.findall(r"GLOBAL ([\w.]+)", str(error))[:1]


#: Python that re-saves a trusted checkpoint without the objects a weights-only load refuses: each of its
#: top-level entries (state_dict, optimizer_states, loops, hyper_parameters, callbacks, ...) is kept when
#: saved alone it holds none of them. Lightning's own entries are tensors and plain values, so what is
#: dropped is what was added to it.
RESAVE = (
    "import io, torch; c = torch.load({source}, weights_only=False); "
    "plain = lambda v: torch.save(v, b := io.BytesIO()) or not "
    "torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(b.getvalue())); "
    "torch.save({{k: v for k, v in c.items() if plain(v)}}, {target})"
)


def resave_command(path: Path, target: Path) -> str:
    """The shell command that re-saves the trusted checkpoint at ``path`` as ``target`` (``RESAVE``)."""
    code = RESAVE.format(source=json.dumps(str(path)), target=json.dumps(str(target)))
    return f"python -c {shlex.quote(code)}"


def untrusted_checkpoint(
    path: Path, source: str, error: Exception, resave_to: Path | None = None
) -> ExperimentError:
    """The one error line for a checkpoint a weights-only load refused: ``source`` names the file as the
    user met it (``--ckpt_path X``), then the objects, why, and how to re-save the file if it is trusted,
    as ``resave_to`` (by default ``<name>-plain.ckpt`` beside it, given as ``--ckpt_path``)."""
    names = unsafe_globals(path, error)
    listed = f" ({', '.join(names)})" if names else ""
    target = resave_to or path.with_name(f"{path.stem}-plain{path.suffix or '.ckpt'}")
    then = "then start again" if resave_to is not None else f"then give --ckpt_path {target}"
    return ExperimentError(
        f"{source} holds objects this command will not unpickle{listed}: a weights-only load refuses "
        "them, as unpickling them could run code; "
        f"if you trust the file, re-save it without them: {resave_command(path, target)}; {then}"
    )


def read_checkpoint(path: Path, source: str | None = None, resave_to: Path | None = None) -> dict[str, Any]:
    """The checkpoint at ``path``, read weights-only (tensors and plain values: nothing in it runs), its
    tensors mapped rather than read; an ExperimentError naming the file when it is empty, cut short, not
    written by ``torch.save``, not a Lightning checkpoint, or holds other objects. ``source`` names the
    file in those messages (by default ``--ckpt_path <path>``); ``resave_to`` is where the message tells
    the user to re-save a trusted file with other objects (``untrusted_checkpoint``)."""
    name = source or f"--ckpt_path {path}"
    if path.is_dir():
        raise ExperimentError(f"{name} is a folder: give a checkpoint file (.ckpt) in it")
    if path.stat().st_size == 0:
        raise ExperimentError(f"{name} is empty (a write that was cut off?): give another checkpoint")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            head = file.read(2)
        if not head.startswith(b"\x80"):  # neither torch's zip format nor a pickle (its old format)
            raise ExperimentError(
                f"{name} is not a checkpoint (not a file torch.save wrote): give a run's .ckpt"
            )
    try:
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):  # a checkpoint of the old format cannot be mapped
                raise
            content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise ExperimentError(f"{name} is not a checkpoint ({one_line_of(error)})") from None
        raise untrusted_checkpoint(path, name, error, resave_to) from None
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise ExperimentError(
            f"{name} cannot be read as a checkpoint ({one_line_of(error)}): it is cut short or was not "
            "written by this command; give another one (the run's last.ckpt or best-*.ckpt)"
        ) from None
    if not isinstance(content, dict) or "state_dict" not in content:
        kind = type(content).__name__
        raise ExperimentError(
            f"{name} holds a {kind}, not a Lightning checkpoint (no state_dict): give a run's .ckpt file"
        )
    return content


def one_line_of(error: Exception) -> str:
    """The first line of ``error``'s message, or its type's name when it has none."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def checkpoint_model(checkpoint: dict[str, Any]) -> str | None:
    """The class path of the model a checkpoint holds, when the command wrote it (None otherwise)."""
    hparams = checkpoint.get("hyper_parameters") or {}
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    return str(class_path) if class_path else None


class EvaluationPoint(NamedTuple):
    """Where an evaluation of a checkpoint is logged: the step and the epoch at which the checkpoint's
    training logged its last epoch values (``checkpoint_step``; the checkpoint's ``epoch``)."""

    step: int
    epoch: int


def checkpoint_step(checkpoint: dict[str, Any]) -> int:
    """The step at which a checkpoint's training logged its last epoch values: Lightning logs them at the
    count of batches that stepped, minus one (this differs from ``global_step`` when a step makes
    several optimizer updates)."""
    try:
        stepped = int(checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"])
    except (KeyError, TypeError):
        stepped = int(checkpoint.get("global_step", 0))
    return max(stepped - 1, 0)


def best_checkpoint(last: Path) -> Path | None:
    """The best checkpoint recorded in ``last.ckpt``'s state, if it still exists."""
    # ModelCheckpoint records its best file in its state inside last.ckpt. Only a monitoring one
    # chooses a best: LastCheckpoint's state names last.ckpt itself as its "best".
    # Mapped, not read; a broken file, or one holding other objects, is one error line naming it.
    state = read_checkpoint(last, f"--ckpt_path best: {last}, whose state names the best checkpoint,")
    for value in state.get("callbacks", {}).values():
        if isinstance(value, dict) and value.get("monitor") and value.get("best_model_path"):
            best = Path(value["best_model_path"])
            if not best.is_absolute() and not best.is_file():
                best = last.parent / best.name  # recorded relative to another working folder
            if best.is_file():
                return best
    return None


def find_checkpoint(layout: RunLayout, which: str) -> Path | None:
    """The ``last`` or ``best`` checkpoint of the newest run of ``layout`` that has one."""
    if layout.kind == "unknown":
        raise ExperimentError(
            f"--ckpt_path {which}: the runs of {layout.logger} are not on this disk to look through; "
            "give the checkpoint file"
        )
    for run in layout.runs():
        last = run / "checkpoints" / "last.ckpt"
        if not last.is_file():
            continue
        if which == "last":
            return last
        best = best_checkpoint(last)
        if best is not None:
            return best
    return None


def written_by_runs(config: Namespace, layout: RunLayout) -> bool:
    """Whether the first config file is one the experiment's own runs wrote (a run's ``config.yaml``, a
    tune's ``tuned.yaml``): its evaluations are the experiment's, not those of a config of another name."""
    files = config.get("config") or []
    if not files or layout.kind != "folders" or layout.root is None:
        return False
    return Path(str(files[0])).resolve().is_relative_to(layout.root.resolve())


def resolve_ckpt_path(config: Namespace, layout: RunLayout, subcommand: str | None) -> EvaluationPoint | None:
    """Check the run's ``ckpt_path`` and set ``config`` (the run's parsed config) to use it: the path of
    ``last``/``best``, and the logger and checkpoint folders of the run it belongs to. Returns, for an
    evaluation of a checkpoint, the training step and epoch to log it at; else None."""
    if config.get("weights_only") is False:
        raise ExperimentError(
            "--weights_only false: this command reads every checkpoint weights-only, as unpickling other "
            "objects could run code; leave the flag out (a checkpoint that needs it is refused with a "
            "way to re-save it)"
        )
    ckpt_path = config.get("ckpt_path")
    given = ckpt_path
    if ckpt_path in ("last", "best"):
        found = find_checkpoint(layout, ckpt_path)
        if found is None and subcommand != "fit":
            last = find_checkpoint(layout, "last") if ckpt_path == "best" else None
            if last is not None:
                raise ExperimentError(
                    f"--ckpt_path best: {last} has no best checkpoint yet (a best one is kept only "
                    "after a validation has run); give --ckpt_path last, or fit with validation"
                )
            where = layout.root if layout.kind == "none" else f"the runs of {layout.experiment}"
            raise ExperimentError(
                f"--ckpt_path {ckpt_path}: no checkpoint in {where} ({layout.logger}, under "
                f"{layout.root}); run fit first or give a checkpoint file"
            )
        # Resuming a run that never saved a checkpoint starts from scratch, as Lightning does.
        config.ckpt_path = ckpt_path = str(found) if found is not None else None
    if not ckpt_path:
        check_hpc_checkpoint(config)
        return None
    path = Path(ckpt_path)
    if not path.exists():
        raise ExperimentError(f"checkpoint file not found: {ckpt_path}")
    # A write of a checkpoint beside it that was killed left a temporary file: gone at this start
    # (rank 0's job; rank_zero_only.rank is read from the launcher's environment).
    if rank_zero_only.rank == 0:
        remove_stale_temporaries(path.parent)
    checkpoint = read_checkpoint(path, f"--ckpt_path {given}: {path}" if given != ckpt_path else None)
    check_checkpoint_model(checkpoint, path, config.get("model") or Namespace())
    # One of the experiment's own checkpoints keeps its work in the run that made it: a resumed fit
    # continues there, an evaluation writes into it at the checkpoint's step.
    run = layout.run_of(path) if layout.kind != "none" else None
    if run is not None:
        # A config of another name evaluating this experiment's checkpoint (feature_extraction.yaml
        # of mnist_convnet's) gets a folder of its own beside the experiment's own evaluations.
        config_name = experiment_name(config)
        own = config_name == layout.experiment or written_by_runs(config, layout)
        label = subcommand if own else f"{subcommand}_{config_name}"
        layout.log_into(config.trainer, run, label)
    # The checkpoint callbacks pointed at the folder the checkpoint was written in reload their state
    # as saved instead of warning that "the dirpath has changed": a resumed fit writes on there; an
    # evaluation writes nothing, so the folder recorded in the file serves even for a copied file.
    if subcommand in ("validate", "test", "predict"):
        states = checkpoint.get("callbacks", {}).values()
        recorded = [s["dirpath"] for s in states if isinstance(s, dict) and s.get("dirpath")]
        folder = recorded[0] if recorded else str(path.parent)
        config.checkpoint.dirpath = config.last_checkpoint.dirpath = folder
        return EvaluationPoint(checkpoint_step(checkpoint), int(checkpoint.get("epoch") or 0))
    if run is not None:
        config.checkpoint.dirpath = config.last_checkpoint.dirpath = str(path.parent)
        # Resuming in the run means its checkpoints folder is not empty, which Lightning warns of.
        folder = re.escape(os.path.realpath(path.parent))
        warnings.filterwarnings("ignore", message=rf"Checkpoint directory {folder} exists and is not")
    return None


def check_hpc_checkpoint(config: Namespace) -> None:
    """On SLURM, a run without a checkpoint resumes from the requeue checkpoint Lightning finds in the
    trainer's ``default_root_dir`` (experiments/preemption.py): read it weights-only now, before anything
    is built, so that a file holding other objects is one error line naming it and where it was found."""
    found = hpc_resume_checkpoint(config.trainer.get("default_root_dir"))
    if found is not None:
        source = (
            f"the SLURM requeue checkpoint {found} (the newest hpc_ckpt_<n>.ckpt in {found.parent}, "
            "which a run on SLURM given no checkpoint resumes from)"
        )
        read_checkpoint(found, source, resave_to=found)


def _plain(value: Any) -> Any:
    """A value as a config and a checkpoint can both hold it (tuples and lists alike)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_checkpoint_model(checkpoint: dict[str, Any], path: Path, model_config: Namespace) -> None:
    """Lightning builds the model a checkpoint names, whatever the config says: another lesson's
    checkpoint is an error naming both; a configured argument the checkpoint overrides is said."""
    saved = checkpoint_model(checkpoint)
    configured = str(model_config.get("class_path", "")) or None
    if saved is None or configured is None:
        return
    if saved.rsplit(".", 1)[-1] != configured.rsplit(".", 1)[-1]:
        raise ExperimentError(
            f"--ckpt_path {path} holds a {saved.rsplit('.', 1)[-1]}, but the config builds a "
            f"{configured.rsplit('.', 1)[-1]}: give a checkpoint of this lesson, or the config it was "
            "trained with (config.yaml in its run folder)"
        )
    hparams = checkpoint.get("hyper_parameters") or {}
    init_args = model_config.get("init_args")
    differ = [
        f"{key}={hparams[key]!r} (configured {value!r})"
        for key, value in (vars(init_args).items() if isinstance(init_args, Namespace) else [])
        if key in hparams and key not in DATA_TO_MODEL and not isinstance(value, Namespace)
        and _plain(hparams[key]) != _plain(value)
    ]  # fmt: skip
    if differ:
        print(f"note: {path} was trained with {', '.join(differ)}: the checkpoint's values are used")
