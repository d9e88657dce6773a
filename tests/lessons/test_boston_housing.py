"""configs/boston_housing.yaml and boston_housing_linear.yaml end to end (Boston house prices, MLP and
linear), a CSV of the user's own by class name, and the one-line errors a bad CSV gives."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from datamodules import BostonHousingDataModule
from experiments.main import main
from tests.conftest import QUIET, config
from tests.tabular_data import write_linear_table, write_rows


@pytest.mark.parametrize("lesson", ["boston_housing", "boston_housing_linear"])
@pytest.mark.parametrize("subcommand", ["fit", "test", "predict"])
def test_fast_dev_run(cli, lesson, subcommand):
    run = cli(subcommand, "--config", config(lesson), "--trainer.fast_dev_run=true")
    assert run.trainer.state.finished


def test_linear_variant_is_the_same_data_without_hidden_layers(cli):
    run = cli("fit", "--config", config("boston_housing_linear"), "--trainer.fast_dev_run=true")
    assert [type(m).__name__ for m in run.model.net] == ["Linear"]
    assert run.datamodule.target == "MEDV" and len(run.datamodule.feature_names) == 13
    # The MLP's data settings, so that the two test RMSEs are on the same houses.
    names = ("boston_housing_linear", "boston_housing")
    linear, mlp = (yaml.safe_load(Path(config(name)).read_text()) for name in names)
    assert linear["data"] == mlp["data"]


def test_boston_fit_then_test_and_predict_from_the_checkpoint(cli, in_tmp):
    short = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=3"]
    cli("fit", "--config", config("boston_housing"), *short)
    run = in_tmp / "lightning_logs" / "boston_housing"
    assert (run / "version_0" / "checkpoints" / "last.ckpt").is_file()
    test = cli("test", "--config", config("boston_housing"), "--ckpt_path=last")
    rmse = test.trainer.callback_metrics["test/rmse"].item()
    assert 0 < rmse < 30  # MEDV spans 5 to 50 ($1000s)
    # Predicted against actual prices: the last validation's in the run, the test's in its folder.
    for png in ("figures/val_predicted_vs_actual.png", "test/figures/test_predicted_vs_actual.png"):
        with Image.open(run / "version_0" / png) as figure:
            assert figure.size == (500, 480), png
    cli("predict", "--config", config("boston_housing"), "--ckpt_path=last")
    predictions = torch.load(run / "version_0" / "predict" / "predictions.pt")
    # predict serves the test split's houses, in order: their RMSE is the test's.
    data = BostonHousingDataModule()
    data.setup("test")
    assert predictions.shape == (76, 1)
    errors = predictions - data.splits["test"][1]
    assert torch.sqrt((errors**2).mean()).item() == pytest.approx(rmse, rel=1e-4)
    # The readable copy: each house by its line of the shipped CSV, the price under the target's name.
    with open(run / "version_0" / "predict" / "predictions.csv", newline="") as file:
        header, *rows = list(csv.reader(file))
    lines = data.tables["table"].lines[data.split_rows["test"]].tolist()
    assert header == ["input", "MEDV"]
    assert [row[0] for row in rows] == [f"boston_housing.csv line {n}" for n in lines]
    written = torch.tensor([[float(row[1])] for row in rows])
    torch.testing.assert_close(written, predictions, rtol=1e-5, atol=1e-4)


def csv_args(path, *extra: str) -> list[str]:
    return [
        "--model=TabularRegressor",
        "--data=CSVRegressionDataModule",
        f"--data.path={path}",
        "--data.target=price",
        "--data.features=[a, b, c]",
        *extra,
    ]


def test_own_csv_by_class_name(cli, in_tmp):
    path = write_linear_table(in_tmp / "houses.csv", n=40)
    run = cli("fit", *csv_args(path), "--trainer.fast_dev_run=true")
    assert run.datamodule.feature_names == ["a", "b", "c"]
    assert run.trainer.state.finished


def test_in_features_follow_the_data(cli, in_tmp):
    """The datamodule's column count reaches the model, over a configured value that does not match."""
    path = write_linear_table(in_tmp / "houses.csv", n=40)
    args = csv_args(path, "--data.features=[a, b]", "--model.in_features=7")
    run = cli("fit", *args, "--trainer.fast_dev_run=true")
    assert run.datamodule.in_features == run.model.hparams.in_features == 2
    assert run.model.net[0].in_features == 2


def table_ending_with(last_row: list[object]):
    """A maker of a 4-column CSV of nine good rows (lines 2-10) and ``last_row`` on line 11."""
    good = [[i, i, i, i] for i in range(9)]
    return lambda folder: write_rows(folder / "t.csv", [["a", "b", "c", "price"], *good, last_row])


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda folder: folder / "missing.csv", [], "missing.csv' does not exist"),
        (
            lambda folder: write_linear_table(folder / "t.csv"),
            ["--data.target=PRICE"],
            "its columns are: id, a, b, c, price",
        ),
        (table_ending_with([1, "x", 2, 3]), [], "column 'b' on line 11 holds 'x', not a number"),
    ],
)
def test_bad_csv_gives_one_line_and_exit_2(in_tmp, capsys, monkeypatch, make, extra, message):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    path = make(in_tmp)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *csv_args(path, *extra), "--trainer.fast_dev_run=true", *QUIET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
