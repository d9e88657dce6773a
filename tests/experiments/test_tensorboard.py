"""The TensorBoard layout every run gets (experiments/tensorboard.py), read back from real event files, and
the HPARAMS tab as TensorBoard's own hparams plugin serves it for two experiments in one logdir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from experiments.cli import ExperimentCLI
from experiments.tensorboard import RunLogs, scalars_layout
from tests.conftest import QUIET, config


def test_the_layout_puts_each_metrics_phases_on_one_chart():
    names = [
        "train/loss",
        "val/loss",
        "val/acc",
        "test/acc",
        "train/lr",
        "train/lr/pg2",
        "train/epoch",
        "epoch",
    ]
    layout = scalars_layout(names)
    assert layout["metrics"] == {
        "acc": ["Multiline", [r"^(train|val|test)/acc$"]],
        "loss": ["Multiline", [r"^(train|val|test)/loss$"]],
    }
    assert layout["optimizer"] == {"learning rate": ["Multiline", [r"^train/lr(/.*)?$"]]}


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two experiments in one ``lightning_logs``, as ``make tensorboard`` shows them: a linear_regression
    fit and its test from the checkpoint, and a boston_housing fit with its lr set on the command line to
    the AdamW default."""
    folder = tmp_path_factory.mktemp("two_experiments")
    cpu = "--trainer.accelerator=cpu"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        linear = ExperimentCLI(
            args=["fit", "--config", config("linear_regression"), "--trainer.max_epochs=2", cpu, *QUIET]
        )
        ExperimentCLI(args=["test", "--config", config("linear_regression"), "--ckpt_path=last", cpu, *QUIET])
        boston = ExperimentCLI(
            args=[
                "fit",
                "--config",
                config("boston_housing"),
                "--trainer.max_epochs=2",
                "--model.optimizer.init_args.lr=0.001",
                cpu,
                *QUIET,
            ]
        )
    logs = folder / "lightning_logs"
    return {
        "logs": logs,
        "linear": logs / "linear_regression" / "version_0",
        "boston": logs / "boston_housing" / "version_0",
        "linear_fit": linear,
        "boston_fit": boston,
    }


def test_a_run_has_its_groups_first_and_the_layout(logdir):
    events = EventAccumulator(str(logdir["linear"]), size_guidance={"tensors": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    # Every scalar is under train/, val/ or test/: no top-level "epoch" or "lr-SGD" group opening first.
    assert {"train/loss", "val/loss", "train/lr", "train/epoch"} <= tags
    assert all(tag.split("/")[0] in ("train", "val", "test") for tag in tags), tags
    [written] = events.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(written.tensor_proto.string_val[0])
    charts = {category.title: [chart.title for chart in category.chart] for category in layout.category}
    assert charts == {"metrics": ["intercept", "loss", "slope"], "optimizer": ["learning rate"]}
    loss = next(chart for chart in layout.category[0].chart if chart.title == "loss")
    assert list(loss.multiline.tag) == [r"^(train|val|test)/loss$"]


def hparams_data(run: Path) -> dict[str, Any]:
    """The hparams plugin's records of a run, as TensorBoard's loader reads them from its event files."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run)).Reload()
    records = {}
    try:
        contents = events.PluginTagToContent("hparams")
    except KeyError:  # no hparams records at all
        return {}
    for tag, raw in contents.items():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        records[tag] = data
    return records


def hparams_tab(logdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """What TensorBoard's hparams plugin answers the HPARAMS tab for ``logdir``: the ``/experiment`` and the
    ``/session_groups`` responses (as JSON), through the plugin's own handlers on TensorBoard's loader, with
    the requests the tab's frontend sends."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb_context = base_plugin.TBContext(data_provider=provider, logdir=str(logdir), multiplexer=multiplexer)
    backend = backend_context.Context(tb_context)
    request = context.RequestContext()
    asked = json_format.Parse(
        json.dumps({"experimentName": "", "hparamsLimit": 1000}), api_pb2.GetExperimentRequest()
    )
    experiment = get_experiment.Handler(request, backend, "", asked).run()
    statuses = ["STATUS_FAILURE", "STATUS_RUNNING", "STATUS_SUCCESS", "STATUS_UNKNOWN"]
    asked = {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0, "sliceSize": 1000}
    groups = list_session_groups.Handler(
        request, backend, "", json_format.Parse(json.dumps(asked), api_pb2.ListSessionGroupsRequest())
    ).run()
    return json_format.MessageToDict(experiment), json_format.MessageToDict(groups)


def test_two_experiments_in_one_logdir_fill_the_hparams_tab(logdir):
    experiment, answer = hparams_tab(logdir["logs"])
    columns = {info["name"]: info for info in experiment["hparamInfos"]}
    # Both experiments' parameters: what the configs and flags set, every class, the seed.
    assert sorted(columns["model"]["domainDiscrete"]) == [
        "modules.LinearRegression",
        "modules.TabularRegressor",
    ]
    assert columns["model"]["differs"] and columns["model.optimizer.lr"]["differs"]
    assert {"data", "model.optimizer", "data.batch_size", "data.n_points", "model.dropout"} <= set(columns)
    assert {"seed_everything", "trainer.max_epochs", "checkpoint.monitor", "model.hidden_sizes"} <= set(
        columns
    )
    # Library defaults nobody set are not; nor is the logging plumbing (the logger, the progress bar).
    for unset in ("amsgrad", "foreach", "capturable", "betas", "momentum", "nesterov"):
        assert f"model.optimizer.{unset}" not in columns
    assert not any(
        name.startswith(("trainer.logger", "trainer.callbacks", "trainer.enable")) for name in columns
    )
    # Every scalar of each run is a metric column; the test run's, written into version_0/test, too.
    metrics = {(info["name"].get("group", ""), info["name"]["tag"]) for info in experiment["metricInfos"]}
    assert {("", "val/loss"), ("", "val/loss_best"), ("", "val/rmse"), ("", "val/rmse_best")} <= metrics
    assert ("test", "test/loss") in metrics
    rows = {group["name"]: group for group in answer["sessionGroups"]}
    assert set(rows) == {"linear_regression/version_0", "boston_housing/version_0"}

    def values(row: str) -> dict[str, float]:
        return {
            f"{m['name'].get('group', '')}:{m['name']['tag']}": m["value"] for m in rows[row]["metricValues"]
        }

    linear, boston = values("linear_regression/version_0"), values("boston_housing/version_0")
    assert {":val/loss", ":val/loss_best", "test:test/loss"} <= set(linear)
    assert {":val/rmse", ":val/rmse_best"} <= set(boston) and "test:test/loss" not in boston
    fit = logdir["boston_fit"]
    assert boston[":val/rmse_best"] == pytest.approx(float(fit.trainer.checkpoint_callback.best_model_score))
    [test_loss] = EventAccumulator(str(logdir["linear"] / "test")).Reload().Scalars("test/loss")
    assert linear["test:test/loss"] == pytest.approx(test_loss.value)
    # Each row has its own experiment's parameters, and a session that ended well.
    assert (
        rows["boston_housing/version_0"]["hparams"]["model.optimizer.lr"] == 0.001
    )  # = AdamW's default, set
    assert rows["boston_housing/version_0"]["hparams"]["model.optimizer"] == "torch.optim.AdamW"
    assert rows["linear_regression/version_0"]["hparams"]["data.n_points"] == 256
    assert "model.dropout" not in rows["linear_regression/version_0"]["hparams"]
    assert [session["status"] for row in rows.values() for session in row["sessions"]] == [
        "STATUS_SUCCESS"
    ] * 2


def test_each_run_writes_a_session_and_no_experiment_header(logdir):
    # An experiment header per run would make the plugin show one run's columns for the whole logdir.
    for run in (logdir["linear"], logdir["boston"]):
        assert set(hparams_data(run)) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    assert hparams_data(logdir["linear"] / "test") == {}  # the test joins its training's session
    # hparams.yaml holds the same parameters as the HPARAMS tab, not the module's save_hyperparameters().
    logged = yaml.safe_load((logdir["boston"] / "hparams.yaml").read_text())
    run_logs = next(c for c in logdir["boston_fit"].trainer.callbacks if isinstance(c, RunLogs))
    assert logged == run_logs.parameters and "_instantiator" not in logged and "in_features" not in logged
    start = hparams_data(logdir["boston"])["_hparams_/session_start_info"].session_start_info.hparams
    assert start["data.batch_size"].number_value == 32 and start["seed_everything"].number_value == 42
    assert start["data.standardize"].bool_value is True
    assert yaml.safe_load((logdir["linear"] / "test" / "hparams.yaml").read_text())["model"] == (
        "modules.LinearRegression"
    )


def test_every_logger_gets_the_run_parameters_instead_of_the_modules_hparams(tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    class Remembering(BoringModel):
        def __init__(self, width: int = 32) -> None:
            super().__init__()
            self.save_hyperparameters()  # what Lightning would log to every logger by itself

    parameters = {"model": "tests.Remembering", "model.optimizer.lr": 0.1, "seed_everything": 42}
    tensorboard = TensorBoardLogger(tmp_path, name="tb", default_hp_metric=False)
    csv = CSVLogger(tmp_path, name="csv")
    trainer = Trainer(
        logger=[tensorboard, csv],
        callbacks=[RunLogs(parameters)],
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        log_every_n_steps=1,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Remembering())
    for logger in (tensorboard, csv):
        assert yaml.safe_load(Path(logger.log_dir, "hparams.yaml").read_text()) == parameters
    start = hparams_data(Path(tensorboard.log_dir))["_hparams_/session_start_info"].session_start_info
    assert dict(start.hparams)["model.optimizer.lr"].number_value == 0.1 and "width" not in start.hparams
