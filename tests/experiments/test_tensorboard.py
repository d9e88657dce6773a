"""The TensorBoard layout every run gets (experiments/tensorboard.py), read back from real event files."""

from __future__ import annotations

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
