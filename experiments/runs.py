"""Where an experiment's runs live, for every logger, and what the experiment is called.

Every run of an experiment (``experiment_name``: the first config file's name, e.g. ``mnist_convnet``)
is a folder holding ``checkpoints/``, ``config.yaml`` and ``figures/``, whatever the logger:

- TensorBoard (the default) and CSV: ``lightning_logs/<experiment>/version_N``; both loggers number their
  runs in the same folder, so ``--ckpt_path last`` is the newest run of the experiment either way;
- MLflow (``pip install -e ".[mlflow]"``, ``--trainer.logger MLFlowLogger``): by default an SQLite store,
  ``lightning_logs/mlflow.db`` (the one local store MLflow 3 keeps up without an opt-out), the
  experiment under its name, its artifacts in ``lightning_logs/mlartifacts/<experiment>``. MLflow numbers
  experiments (``experiment_id``, 1, 2, ...: the UI's URLs) and names runs by a hex ``run_id``; a run's
  folder is its own artifact folder, ``lightning_logs/mlartifacts/<experiment>/<run id>/artifacts``, so
  what is written there (checkpoints, config, figures, predictions) is in the run's Artifacts tab with no
  copy (``core.distributed.run_dir``). ``--trainer.logger.save_dir`` moves the store and the artifacts
  to another folder; a ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``) the user gives is kept. The runs
  are read through MLflow's client, each with its artifact folder, which is its run folder where it is on
  this disk; with a tracking server the run folder is ``<default_root_dir>/<experiment id>/<run id>``,
  uploaded at the end of each stage (experiments/cli.py ``RunConfig``);
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from jsonargparse import Namespace

from core.errors import ExperimentError

LOG_ROOT = "lightning_logs"
#: Loggers whose runs are ``<save_dir>/<name>/<version>``.
FOLDER_LOGGERS = ("TensorBoard", "TensorBoardLogger", "CSVLogger")
#: Lightning's default MLflow experiment name and save_dir: replaced by the experiment's.
MLFLOW_DEFAULTS = ("lightning_logs", "./mlruns")
#: The MLflow store and artifact folder in ``save_dir`` (``lightning_logs``) when no tracking URI is given.
MLFLOW_DATABASE = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"


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

    ``kind``: ``folders`` (TensorBoard, CSV), ``mlflow`` (a store on this disk), ``none`` (no logger) or
    ``unknown``; ``root``: the folder holding the runs (the one run, for ``none``; MLflow's store: its
    SQLite file or file-store folder); ``logger``: the logger's class name, for messages; ``uri``: MLflow's
    tracking URI.
    """

    kind: str
    root: Path | None
    logger: str
    experiment: str
    uri: str | None = None
    #: MLflow: the run id of each run folder ``runs`` found.
    _run_ids: dict[Path, str] = field(default_factory=dict, repr=False, compare=False)

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
            # LOG_ROOT: the default TensorBoard logger's save_dir, which jsonargparse carries over when
            # the class is changed on the command line.
            if args.get("save_dir") in (None, MLFLOW_DEFAULTS[1], LOG_ROOT):
                args.save_dir = LOG_ROOT
            # SQLite rather than Lightning's default file store (file:<save_dir>), which MLflow 3 runs only
            # with MLFLOW_ALLOW_FILE_STORE set, and whose UI then refuses to start.
            default = f"sqlite:///{args.save_dir}/{MLFLOW_DATABASE}"
            # Set in the config, not left to Lightning's default (MLFLOW_TRACKING_URI as it was when
            # Lightning was imported): MLflow sets the variable to the URI of the last run it logged.
            uri = args.tracking_uri = (
                args.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or default
            )
            if uri == default and not args.get("artifact_location"):
                args.artifact_location = f"{args.save_dir}/{MLFLOW_ARTIFACTS}/{args.experiment_name}"
            store = local_store(uri)
            if store is None:
                return cls("unknown", None, f"MLFlowLogger at {uri}", str(args.experiment_name), uri)
            return cls("mlflow", store, name, str(args.experiment_name), uri)
        return cls("unknown", None, name or str(logger), experiment)

    def runs(self) -> list[Path]:
        """The experiment's run folders, newest first."""
        if self.kind == "none":
            return [self.root] if self.root is not None else []
        if self.kind == "folders" and self.root is not None:
            versions = [p for p in self.root.glob("version_*") if _version_number(p) >= 0]
            return sorted(versions, key=_version_number, reverse=True)
        if self.kind == "mlflow" and self.root is not None:
            return self._mlflow_runs()
        return []

    def _mlflow_runs(self) -> list[Path]:
        """The experiment's runs whose artifact folders are on this disk, newest first, read through
        MLflow's client (a store's layout on disk is MLflow's own business)."""
        if self.root is None or not self.root.exists():  # no run yet: do not create an empty store
            return []
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ExperimentError(
                'the MLflow logger needs MLflow: pip install -e ".[mlflow]" (or mlflow-skinny)'
            ) from None
        client = MlflowClient(tracking_uri=self.uri)
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is None:
            return []
        folders, token = [], None
        while True:
            page = client.search_runs(
                [experiment.experiment_id], order_by=["attributes.start_time DESC"], page_token=token
            )
            for run in page:
                folder = local_path(run.info.artifact_uri)
                if folder is not None:
                    self._run_ids[folder] = run.info.run_id
                    folders.append(folder)
            token = page.token
            if not token:
                return folders

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
            # Runs found by ``runs``; else a run folder as MLflow lays it out, <run id>/artifacts.
            args.run_id = self._run_ids.get(run) or (run.parent.name if run.name == "artifacts" else run.name)


def local_path(uri: str) -> Path | None:
    """The folder a ``file:`` URI or a plain path names; None for any other scheme (a server's)."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    # A plain path; a one-letter scheme is a Windows drive.
    return Path(uri) if len(parsed.scheme) <= 1 else None


def local_store(uri: str) -> Path | None:
    """Where an MLflow tracking URI keeps its store on this disk: the SQLite file of ``sqlite:///<path>``,
    the folder of a file store; None for a server or another database."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return local_path(uri)
