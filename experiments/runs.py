"""Where an experiment's runs live, for every logger, and what the experiment is called.

Every run of an experiment (``experiment_name``: the first config file's name, e.g. ``mnist_convnet``)
is a folder holding ``checkpoints/``, whatever the logger:

- TensorBoard (the default) and CSV: ``lightning_logs/<experiment>/version_N``; both loggers number their
  runs in the same folder, so ``--ckpt_path last`` is the newest run of the experiment either way;
- MLflow (``pip install -e ".[mlflow]"``, ``--trainer.logger MLFlowLogger``): a local file store in
  ``lightning_logs/mlruns`` by default, the experiment under its name, each run in
  ``lightning_logs/mlruns/<experiment id>/<run id>``;
- no logger (``--trainer.logger false``): ``<default_root_dir>/checkpoints``, one run only, when a
  ``--trainer.default_root_dir`` is given (else no checkpoints are written: experiments/parts.py).

``RunLayout.configure`` fills in what the user left unset (the experiment's name, the folders), so a
config printed with ``--print_config`` names them, and ``RunLayout.runs`` lists the experiment's runs,
newest first: ``--ckpt_path last|best`` (experiments/ckpt_path.py) never looks anywhere else, so it
never loads another experiment's checkpoint. ``RunLayout.log_into`` points the logger at the run a
checkpoint came from, so that its evaluation or resumption keeps its work there.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

LOG_ROOT = "lightning_logs"
#: Loggers whose runs are ``<save_dir>/<name>/<version>``.
FOLDER_LOGGERS = ("TensorBoard", "TensorBoardLogger", "CSVLogger")
#: Lightning's default MLflow experiment name and save_dir: replaced by the experiment's.
MLFLOW_DEFAULTS = ("lightning_logs", "./mlruns")


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def experiment_name(config: Namespace) -> str:
    """The first config file's stem, else the model class name in snake case."""
    files = config.get("config") or []
    if files:
        return Path(str(files[0])).stem
    model = config.get("model")
    class_path = model.get("class_path") if isinstance(model, Namespace) else None
    return snake_case(class_path.rsplit(".", 1)[-1]) if class_path else "experiment"


def _class_name(logger: Any) -> str:
    return str(logger.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(logger, Namespace) else ""


def _version_number(folder: Path) -> int:
    suffix = folder.name.rpartition("_")[2]
    return int(suffix) if folder.name.startswith("version_") and suffix.isdigit() else -1


@dataclass
class RunLayout:
    """How the runs of one experiment are laid out for the configured logger.

    ``kind``: ``folders`` (TensorBoard, CSV), ``mlflow`` (local file store), ``none`` (no logger) or
    ``unknown``; ``root``: the folder holding the runs (or the one run, for ``none``); ``logger``: the
    logger's class name, for messages.
    """

    kind: str
    root: Path | None
    logger: str
    experiment: str

    @classmethod
    def configure(cls, trainer_config: Namespace, experiment: str) -> RunLayout:
        """The layout for the parsed ``trainer`` config; sets the logger's unset name and folders (to the
        experiment's) in ``trainer_config`` itself."""
        logger = trainer_config.get("logger")
        name = _class_name(logger)
        if logger is False or logger is None:
            root = Path(trainer_config.get("default_root_dir") or ".")
            return cls("none", root, "no logger", experiment)
        if name in FOLDER_LOGGERS:
            args = logger.init_args
            if args.get("name") in (None, "lightning_logs"):  # CSVLogger's default name is "lightning_logs"
                args.name = experiment
            if not args.get("save_dir"):
                args.save_dir = LOG_ROOT
            return cls("folders", Path(args.save_dir) / str(args.name), name, str(args.name))
        if name == "MLFlowLogger":
            args = logger.init_args
            if args.get("experiment_name") in (None, MLFLOW_DEFAULTS[0]):
                args.experiment_name = experiment
            uri = args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
            if not uri:
                # LOG_ROOT: the default TensorBoard logger's save_dir, which jsonargparse carries over
                # when the class is changed on the command line.
                if args.get("save_dir") in (None, MLFLOW_DEFAULTS[1], LOG_ROOT):
                    args.save_dir = f"{LOG_ROOT}/mlruns"
                uri = f"file:{args.save_dir}"
            if not uri.startswith("file:"):
                return cls("unknown", None, f"MLFlowLogger at {uri}", str(args.experiment_name))
            # MLflow 3 refuses its file store unless told that it is wanted: here it is the documented
            # default, the one that needs no server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            store = Path(uri.removeprefix("file:").removeprefix("//"))
            return cls("mlflow", store, name, str(args.experiment_name))
        return cls("unknown", None, name or str(logger), experiment)

    def runs(self) -> list[Path]:
        """The experiment's run folders, newest first."""
        if self.kind == "none":
            return [self.root] if self.root is not None else []
        if self.kind == "folders" and self.root is not None:
            versions = [p for p in self.root.glob("version_*") if _version_number(p) >= 0]
            return sorted(versions, key=_version_number, reverse=True)
        if self.kind == "mlflow" and self.root is not None:
            experiment = self._mlflow_experiment()
            if experiment is None:
                return []
            runs = [p.parent for p in experiment.glob("*/meta.yaml")]
            return sorted(runs, key=lambda run: _mlflow_start(run / "meta.yaml"), reverse=True)
        return []

    def _mlflow_experiment(self) -> Path | None:
        for meta in self.root.glob("*/meta.yaml") if self.root else ():
            if re.search(rf"^name: {re.escape(self.experiment)}\s*$", meta.read_text(), re.M):
                return meta.parent
        return None

    def run_of(self, checkpoint: Path) -> Path | None:
        """The run folder of this experiment that ``checkpoint`` belongs to, if any."""
        if checkpoint.parent.name != "checkpoints":
            return None
        run = checkpoint.parent.parent.resolve()
        return next((r for r in self.runs() if r.resolve() == run), None)

    def log_into(self, trainer_config: Namespace, run: Path, label: str) -> None:
        """Point the logger at ``run``, the run that wrote the checkpoint: a resumed ``fit`` (``label``
        ``fit``) continues in it (``version_N`` itself); an evaluation writes into ``version_N/<label>``
        (``test``, ``predict_feature_extraction``); with MLflow, both log into the run itself."""
        args = trainer_config.logger.init_args
        if self.kind == "folders" and label == "fit":
            args.version = run.name
        elif self.kind == "folders":
            args.name = f"{args.name}/{run.name}"
            args.version = label
            if "log_epoch" in args:  # experiments.tensorboard.TensorBoard: no "epoch 0" at the run's end
                args.log_epoch = False
        elif self.kind == "mlflow":
            args.run_id = run.name


def _mlflow_start(meta: Path) -> int:
    match = re.search(r"^start_time: (\d+)", meta.read_text(), re.M)
    return int(match.group(1)) if match else 0
