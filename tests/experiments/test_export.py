"""``python -m experiments export`` (experiments/export.py): trained lessons exported as ONNX and
``torch.export`` files that take raw input and give the lesson's meaning, run through onnxruntime and
``torch.export.load`` at two batch sizes and compared with the trained model computed here by hand; the
sidecar JSON; the lessons that refuse; bad input as one line with nothing written; and every config
either exporting (its graph traced, saved, loaded and checked) or refusing.

The fits are a few steps on the tiny data the lessons' ``write_sample`` writes, in-process, once per file.
"""

from __future__ import annotations

import csv
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from datamodules.tabular import BOSTON_CSV, BostonHousingDataModule
from experiments import export
from experiments.cli import ExperimentCLI
from experiments.main import main
from tests.conftest import QUIET, config
from tests.lesson_data import bypass_cifar_integrity, lesson_configs, load_lesson

onnxruntime = pytest.importorskip("onnxruntime")
SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", *QUIET]


def command(folder: Path, *args: str) -> int:
    """``python -m experiments *args`` in-process, run in ``folder``; its exit status."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.delenv("EXPERIMENTS_DEBUG", raising=False)
        patch.setattr(sys, "argv", ["experiments"])
        try:
            main([*args])
        except SystemExit as stop:
            return int(stop.code or 0)
    return 0


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder holding short fits of logistic_regression (tiny MNIST), boston_housing and first_network."""
    folder = tmp_path_factory.mktemp("export_runs")
    mnist = load_lesson("logistic_regression").args(folder / "data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert command(folder, "fit", "--config", config("logistic_regression"), *mnist, *SHORT) == 0
        assert command(folder, "fit", "--config", config("boston_housing"), *SHORT) == 0
        assert command(folder, "fit", "--config", config("first_network"), *SHORT) == 0
    yield folder


def checkpoint(folder: Path, experiment: str) -> dict[str, Any]:
    (last,) = (folder / "lightning_logs" / experiment).glob("version_0/checkpoints/last.ckpt")
    return torch.load(last, map_location="cpu", weights_only=True)


def run_onnx(path: Path, inputs: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0])


def test_an_image_classifier_takes_uint8_images_and_gives_probabilities(runs: Path) -> None:
    from modules import LogisticRegression

    version = runs / "lightning_logs" / "logistic_regression" / "version_0"
    events = sorted(version.rglob("events.out.tfevents.*"))
    mnist = load_lesson("logistic_regression").args(runs / "data")
    args = [
        "export",
        "--config",
        config("logistic_regression"),
        *mnist,
        "--ckpt_path",
        "last",
        "--format",
        "both",
    ]
    assert command(runs, *args) == 0
    folder = version / "export"
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.onnx", "model.pt2"]
    # No new run, no TensorBoard events: an export writes only its files.
    assert sorted(p.name for p in version.parent.iterdir()) == ["version_0"]
    assert sorted(version.rglob("events.out.tfevents.*")) == events

    # The test images as their files hold them, through both files at two batch sizes, against the trained
    # weights computed here: x / 255, MNIST's normalisation, softmax.
    from datamodules import MNISTDataModule

    images = MNISTDataModule(data_dir=mnist[0].split("=", 1)[1]).load_split(train=False)[0][:5]
    model = LogisticRegression()
    model.load_state_dict(checkpoint(runs, "logistic_regression")["state_dict"])
    with torch.no_grad():
        expected = model((images.float() / 255 - 0.1307) / 0.3081).softmax(dim=1)
    pt2 = torch.export.load(str(folder / "model.pt2")).module()
    for batch in (5, 2):
        for got in (run_onnx(folder / "model.onnx", images[:batch]), pt2(images[:batch]).detach()):
            assert got.shape == (batch, 10)
            torch.testing.assert_close(got, expected[:batch], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got.sum(dim=1), torch.ones(batch))

    sidecar = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    assert sidecar["input"] == {
        "name": "images",
        "shape": ["batch", 1, 28, 28],
        "dtype": "uint8",
        "range": [0, 255],
        "meaning": sidecar["input"]["meaning"],
    }
    assert sidecar["output"]["classes"] == [str(d) for d in range(10)]
    assert sidecar["output"]["name"] == "probabilities" and sidecar["output"]["shape"] == ["batch", 10]
    run = sidecar["run"]
    assert (run["experiment"], run["version"], run["monitor"]) == (
        "logistic_regression",
        "version_0",
        "val/acc",
    )
    trained = checkpoint(runs, "logistic_regression")
    assert (run["step"], run["epoch"]) == (trained["global_step"], trained["epoch"]) == (2, 1)
    assert 0 <= run["score"] <= 1 and run["checkpoint"].endswith("last.ckpt")
    for name in ("onnx", "pt2"):
        assert sidecar["formats"][name]["within_tolerance"] is True
        assert sidecar["formats"][name]["max_abs_diff"] <= 1e-5
    verification = sidecar["verification"]
    assert verification["rtol"] == verification["atol"] == 1e-5 and verification["batch_sizes"] == [32, 1]
    assert {"torch", "onnx", "onnxruntime"} <= set(sidecar["versions"])


def test_boston_takes_raw_features_and_gives_the_price(runs: Path) -> None:
    from modules import TabularRegressor

    output = runs / "boston_export" / "boston.onnx"
    args = ["--config", config("boston_housing"), "--ckpt_path", "last", "--output", str(output)]
    assert command(runs, "export", *args) == 0
    assert sorted(p.name for p in output.parent.iterdir()) == ["boston.json", "boston.onnx"]
    sidecar = json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))
    columns = sidecar["input"]["columns"]
    assert len(columns) == 13 and "MEDV" not in columns and sidecar["output"]["targets"] == ["MEDV"]

    # Rows as the CSV has them (unstandardised), against the model on the datamodule's standardisation.
    with open(str(BOSTON_CSV), newline="", encoding="utf-8-sig") as file:
        rows = [
            [float(row[c]) for c in columns] for row, _ in zip(csv.DictReader(file), range(7), strict=False)
        ]
    raw = torch.tensor(rows, dtype=torch.float64)
    data = BostonHousingDataModule()
    data.load()
    model = TabularRegressor(hidden_sizes=[64, 64], dropout=0.1).eval()
    model.load_state_dict(checkpoint(runs, "boston_housing")["state_dict"])
    with torch.no_grad():
        expected = model(data.scale(raw))
    got = run_onnx(output, raw.float())
    assert got.shape == (7, 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lesson", ["word2vec", "tree_lstm", "coco_captions"])
def test_lessons_without_a_fixed_graph_refuse_in_one_line(
    lesson: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert command(tmp_path, "export", "--config", config(lesson)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    model = load_lesson(lesson).model.__name__
    assert len(err) == 1 and err[0].startswith(f"error: {model} cannot be exported: "), err
    assert list(tmp_path.iterdir()) == []


def _unwritable(runs: Path, patch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    blocker = runs / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    return ["--output", str(blocker / "out" / "model.onnx")], "cannot write in"


def _no_onnxruntime(runs: Path, patch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    patch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    return [], 'needs onnxruntime, which is not installed: pip install -e ".[export]"'


def _other_lesson(runs: Path, patch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    last = runs / "lightning_logs" / "first_network" / "version_0" / "checkpoints" / "last.ckpt"
    return ["--config", config("linear_regression"), "--ckpt_path", str(last)], "holds a FeedForwardNet"


def _differs(runs: Path, patch: pytest.MonkeyPatch) -> tuple[list[str], str]:
    real = export.runner
    # An exported file whose outputs are off by 1e-3: the check must catch it and keep nothing.
    patch.setattr(export, "runner", lambda format_, path: lambda x: real(format_, path)(x) + 1e-3)
    return ["--format", "both"], "export differs from the eager model by up to 0.001"


@pytest.mark.parametrize(
    "case", [_unwritable, _no_onnxruntime, _other_lesson, _differs], ids=lambda c: c.__name__.strip("_")
)
def test_bad_input_is_one_line_and_writes_nothing(
    case: Any, runs: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra, expected = case(runs, monkeypatch)
    before = tree(runs / "lightning_logs")
    args = ["export", "--config", config("first_network"), *extra]
    if "--config" in extra:
        args = ["export", *extra]
    capsys.readouterr()
    assert command(runs, *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert tree(runs / "lightning_logs") == before
    assert not (runs / "a_file" / "out").exists()
    assert not (runs / "lightning_logs" / "first_network" / "version_0" / "export").exists()


class PlainNet(LightningModule):
    """A module as Lightning's docs write one, with none of the export hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PlainData(LightningDataModule):
    """A datamodule that serves plain ``DataLoader``s of a ``TensorDataset``; no test loader."""

    def setup(self, stage: str) -> None:
        self.points = TensorDataset(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.points, batch_size=4)


def check_pt2(model: LightningModule, datamodule: LightningDataModule, folder: Path) -> dict[str, Any]:
    """The export's steps without a checkpoint: graph, trace, .pt2 written, loaded and compared."""
    wrapper, raw, input_spec, output_spec = export.prepare(model, datamodule)
    path = folder / "model.pt2"
    export.write_format("pt2", export.trace(wrapper, raw), path, (input_spec["name"], output_spec["name"]))
    batches = export.check_batches(raw)
    assert len({len(b) for b in batches}) == 2
    return export.compare(export.runner("pt2", path), wrapper, batches)


def test_a_plain_lightning_lesson_exports_its_forward(tmp_path: Path) -> None:
    data = PlainData()
    # The validation batches' first tensors, as forward receives them (there is no test loader).
    _, raw, input_spec, output_spec = export.prepare(PlainNet(), data)
    torch.testing.assert_close(raw, data.points.tensors[0], rtol=0, atol=0)
    assert (input_spec["shape"], output_spec["shape"]) == (["batch", 3], ["batch", 2])
    result = check_pt2(PlainNet(), data, tmp_path)
    assert result["within_tolerance"] and result["max_abs_diff"] == 0


@pytest.mark.parametrize("lesson", lesson_configs())
def test_every_config_exports_or_refuses(
    lesson: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = load_lesson(lesson)
    reason = getattr(found.model, "export_unsupported", None) or getattr(
        found.data, "export_unsupported", None
    )
    if reason:
        assert len(reason) > 40 and "\n" not in reason
        return
    bypass_cifar_integrity(monkeypatch)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = ExperimentCLI(
            args=["--config", config(lesson), *found.args(tmp_path / "data"), *QUIET], run=False
        )
        result = check_pt2(cli.model, cli.datamodule, tmp_path)
    assert result["within_tolerance"], result
    assert not (tmp_path / "lightning_logs").exists()
