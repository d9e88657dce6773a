"""The TensorBoard layout every run gets (experiments/tensorboard.py), read back from real event files."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from experiments.tensorboard import scalars_layout
from tests.conftest import config


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


def test_a_run_has_its_groups_first_and_the_layout(cli, in_tmp):
    cli("fit", "--config", config("linear_regression"), "--trainer.max_epochs=3")
    run = in_tmp / "lightning_logs" / "linear_regression" / "version_0"
    events = EventAccumulator(str(run), size_guidance={"tensors": 0}).Reload()
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


def hparams_data(run) -> dict[str, object]:
    """The hparams plugin's records of a run, as TensorBoard's loader reads them from its event files."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run)).Reload()
    records = {}
    for tag, raw in events.PluginTagToContent("hparams").items():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        records[tag] = data
    return records


def test_every_run_fills_the_hparams_tab_for_comparing_runs(cli, in_tmp):
    runs = []
    for lr in ("0.1", "0.05"):
        fit = cli(
            "fit",
            "--config",
            config("linear_regression"),
            "--trainer.max_epochs=3",
            f"--model.optimizer.lr={lr}",
        )
        runs.append((fit, in_tmp / "lightning_logs" / "linear_regression" / f"version_{len(runs)}"))
    for (fit, run), lr in zip(runs, (0.1, 0.05), strict=True):
        records = hparams_data(run)
        assert set(records) == {
            "_hparams_/experiment",
            "_hparams_/session_start_info",
            "_hparams_/session_end_info",
        }
        values = records["_hparams_/session_start_info"].session_start_info.hparams
        assert values["model.optimizer.lr"].number_value == lr
        assert values["model.optimizer"].string_value == "torch.optim.SGD"
        assert values["data.batch_size"].number_value == 32 and values["seed_everything"].number_value == 42
        metrics = [info.name.tag for info in records["_hparams_/experiment"].experiment.metric_infos]
        assert metrics == ["val/loss", "val/loss_best"]
        # The metrics' values are read from the run's scalars: the final val/loss, and the best one.
        events = EventAccumulator(str(run)).Reload()
        [best] = events.Scalars("val/loss_best")
        assert best.value == pytest.approx(float(fit.trainer.checkpoint_callback.best_model_score))
        assert events.Scalars("val/loss")[-1].value >= best.value - 1e-7
