"""The parts every run carries, declared once: each a callback with its own group of flags.

``PARTS`` is the one list of them. The parser reads it (each part's flags, defaults and ``--help``
heading), the callbacks of a run are built from it, the "did you mean" of a mistyped flag looks in it
(experiments/messages.py), and a test checks that the README's list of shared defaults names exactly
these groups. A new part is a new line here.

Each flag has a stated domain, enforced by the parser in one line naming the flag: the part's class's type
hints (core/domains.py), or, for the arguments a class takes from Lightning (the checkpoint part's
``ModelCheckpoint`` arguments), the part's ``domains`` here (the flag's type and its ``--help`` text).

Every part can be left out of a run with ``--<name>.enabled false`` (``compile`` and
``early_stopping`` are off unless ``--<name>.enabled true``). The checkpoint parts are also left out when
the run has nowhere to keep checkpoints: ``--trainer.enable_checkpointing false``, or
``--trainer.logger false`` without a ``--trainer.default_root_dir`` to write them under (no run folder:
nothing is written in the working folder).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonargparse import Namespace
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser

from core.callbacks import PredictionWriter
from core.domains import (
    CountOrAll,
    FolderPath,
    NonEmptyText,
    NonNegativeInt,
    PositiveDuration,
)
from core.figures import FigureThread
from experiments.callbacks import Checkpoint, EarlyStop, LastCheckpoint, LearningRateLogger
from experiments.compile import Compile
from experiments.faults import ExactResume, FiniteLossGuard
from experiments.preemption import Preemption

#: The flag that switches a part off (a part whose class takes ``enabled`` itself, as ``Compile`` does,
#: keeps its own meaning and default).
ENABLED = "enabled"


@dataclass(frozen=True)
class Domain:
    """A part's flag typed here rather than by its class: the type the parser enforces, and the flag's
    ``--help`` text, which says the domain."""

    type: Any
    help: str


@dataclass(frozen=True)
class Part:
    """One part of every run: the callback class built from the ``--<name>.*`` flags, the defaults the
    command gives those flags, what the part is for (the heading of its flags in ``--help``), and the
    flags whose domain is stated here rather than by the class's type hints."""

    name: str
    cls: type[Callback]
    why: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    domains: Mapping[str, Domain] = field(default_factory=dict)

    def takes_enabled(self) -> bool:
        """Whether the class itself takes ``enabled`` (else the command adds the flag)."""
        return ENABLED in inspect.signature(self.cls).parameters

    def on_by_default(self) -> bool:
        """Whether a run carries the part unless told otherwise (``compile`` and ``early_stopping`` not)."""
        if ENABLED in self.defaults:
            return bool(self.defaults[ENABLED])
        default = inspect.signature(self.cls).parameters.get(ENABLED)
        return True if default is None else bool(default.default)

    def keys(self) -> list[str]:
        """The keys of the part's flags: its class's arguments, and ``enabled``."""
        named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        keys = [name for name, p in inspect.signature(self.cls).parameters.items() if p.kind in named]
        return keys if self.takes_enabled() else [*keys, ENABLED]


PARTS = (
    Part(
        "checkpoint",
        Checkpoint,
        "the best epoch on --checkpoint.monitor (val/loss unless the lesson says otherwise), in the run's "
        "checkpoints/",
        {
            "monitor": "val/loss",
            "mode": "min",
            # last.ckpt comes from last_checkpoint (experiments/callbacks.py).
            "save_last": False,
            "save_top_k": 1,
            # No metric names in file names: "val/loss" would make a sub-folder.
            "filename": "best-epoch={epoch}-step={step}",
            "auto_insert_metric_name": False,
        },
        {
            "dirpath": Domain(
                FolderPath | None, "The checkpoints' folder (not a file); null: the run's checkpoints/."
            ),
            "filename": Domain(
                NonEmptyText | None, "The checkpoints' file name pattern, without .ckpt (not empty)."
            ),
            "monitor": Domain(
                NonEmptyText | None,
                "The logged metric that ranks the checkpoints (val/loss...); null: the latest is the best.",
            ),
            "save_top_k": Domain(
                CountOrAll, "How many of the best checkpoints to keep: a count >= 0, or -1 for all."
            ),
            "mode": Domain(
                Literal["min", "max"], "min: the lowest --checkpoint.monitor is best; max: the highest."
            ),
            "every_n_train_steps": Domain(
                NonNegativeInt | None, "Training steps between checkpoints (>= 0; 0 or null: not by steps)."
            ),
            "train_time_interval": Domain(
                PositiveDuration | None,
                'Time between checkpoints: a duration > 0 such as "0:30:00" (quoted in YAML); null: not by '
                "time.",
            ),
            "every_n_epochs": Domain(
                NonNegativeInt | None, "Epochs between checkpoints (>= 0; 0: not at epochs' ends; null: 1)."
            ),
        },
    ),
    Part(
        "last_checkpoint",
        LastCheckpoint,
        "last.ckpt, the latest state to resume from: written at an epoch's end at most every "
        "--last_checkpoint.min_interval seconds, and always when training ends or is stopped",
    ),
    Part(
        "lr_monitor",
        LearningRateLogger,
        "the learning rate in TensorBoard, as train/lr",
        # Once per epoch: the lessons' schedulers step per epoch, and a write per step costs more than a
        # step of the small lessons. --lr_monitor.logging_interval step for per-step schedules.
        {"logging_interval": "epoch"},
    ),
    Part(
        "early_stopping",
        EarlyStop,
        "stop a fit when --early_stopping.monitor (the checkpoint's metric unless given) has not improved "
        "by more than --early_stopping.min_delta for --early_stopping.patience validations (off unless "
        "--early_stopping.enabled true, or the preset configs/trainer/early_stopping.yaml)",
        {ENABLED: False},
    ),
    Part("prediction_writer", PredictionWriter, "what predict returns, saved in the run folder"),
    Part(
        "exact_resume",
        ExactResume,
        "a resumed fit continues exactly: every rank's random states in each checkpoint, and mid-epoch "
        "resumption",
    ),
    Part(
        "nan_guard",
        FiniteLossGuard,
        "a NaN or infinite training loss stops the run before it is saved",
    ),
    Part(
        "preemption",
        Preemption,
        "SIGTERM, and SLURM's requeue signal, stop a fit after its step with a checkpoint",
    ),
    Part(
        "compile",
        Compile,
        "torch.compile of the lesson's module (off unless --compile.enabled true)",
    ),
    Part(
        "figures",
        FigureThread,
        "figures drawn on a background thread, in at most --figures.max_share of the run's time",
    ),
)


def add_parts(parser: LightningArgumentParser) -> None:
    """Each part's flags, ``--<name>.enabled`` and defaults, under a ``--help`` heading saying what it is for.

    The parser leaves the groups as settings (``instantiate=False``): ``build_parts`` makes the callbacks,
    and leaves out those of the parts switched off.
    """
    for part in PARTS:
        parser.add_class_arguments(
            part.cls,
            part.name,
            fail_untyped=False,
            instantiate=False,
            sub_configs=True,
            skip=set(part.domains) or None,
        )
        group = parser.groups[part.name]
        group.title = f"--{part.name}: {part.why}"
        parameters = inspect.signature(part.cls).parameters
        for key, domain in part.domains.items():
            group.add_argument(
                f"--{part.name}.{key}", type=domain.type, default=parameters[key].default, help=domain.help
            )
        if not part.takes_enabled():
            group.add_argument(
                f"--{part.name}.{ENABLED}",
                type=bool,
                default=True,
                help=f"false: the run goes without {part.name}.",
            )
        parser.set_defaults({f"{part.name}.{key}": value for key, value in part.defaults.items()})


def writes_checkpoints(trainer_config: Namespace) -> bool:
    """Whether the run has somewhere to keep checkpoints: checkpointing is on, and there is a run folder
    (a logger), or a ``default_root_dir`` the user chose."""
    if trainer_config.get("enable_checkpointing") is False:
        return False
    return trainer_config.get("logger") is not False or trainer_config.get("default_root_dir") is not None


def build_parts(config: Namespace) -> list[Callback]:
    """The callbacks of the parts switched on in ``config`` (the run's parsed config).

    A part switched off is built all the same and then left out: its constructor checks its settings,
    so a mistake in them (``--compile.mode fast``) is an error whether the part is on or not.
    """
    checkpoints = writes_checkpoints(config.trainer)
    built = []
    for part in PARTS:
        # Without jsonargparse's own keys (``__path__`` of a ``--<name> FILE``).
        settings = {k: v for k, v in vars(config[part.name]).items() if not k.startswith("__")}
        enabled = settings.get(ENABLED, True) if part.takes_enabled() else settings.pop(ENABLED, True)
        callback = part.cls(**settings)
        if enabled and (checkpoints or not isinstance(callback, ModelCheckpoint)):
            built.append(callback)
    return built
