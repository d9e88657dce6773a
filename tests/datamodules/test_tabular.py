"""CSVRegressionDataModule on CSV files written here, and the packaged Boston house-prices table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.errors import DataConfigError, DataNotFoundError, ExperimentError
from datamodules import BostonHousingDataModule, CSVFormatError, CSVRegressionDataModule
from tests.tabular_data import HEADER, linear_table, write_linear_table, write_rows


def raw_columns(rows: list[list[object]], names: list[str]) -> torch.Tensor:
    """The named columns of a table written by tests.tabular_data, as float64 (n, len(names))."""
    header = rows[0]
    values = [[float(row[header.index(name)]) for name in names] for row in rows[1:]]
    return torch.tensor(values, dtype=torch.float64)


def ready(datamodule: CSVRegressionDataModule) -> CSVRegressionDataModule:
    for stage in ("fit", "test", "predict"):
        datamodule.setup(stage)
    return datamodule


def test_splits_shapes_and_default_features(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv", n=40)
    data = ready(CSVRegressionDataModule(str(path), target="price", features=["a", "b", "c"]))
    assert data.feature_names == ["a", "b", "c"]
    sizes = {split: len(data.splits[split][0]) for split in ("train", "val", "test", "predict")}
    assert sizes == {"train": 28, "val": 6, "test": 6, "predict": 6}
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (28, 3) and y.shape == (28, 1)  # batch_size 32: the whole split
    assert x.dtype == y.dtype == torch.float32
    # Targets keep their units: they are the file's values of the rows in the split.
    raw = raw_columns(linear_table(40), ["price"])
    assert torch.allclose(data.splits["val"][1].double(), raw[data.split_rows["val"]], atol=1e-5)


def test_all_other_columns_are_features_when_none_are_named(tmp_path):
    rows = [["x1", "y", "x2"], *([i, 2 * i, i % 3] for i in range(20))]
    data = ready(CSVRegressionDataModule(str(write_rows(tmp_path / "t.csv", rows)), target="y"))
    assert data.feature_names == ["x1", "x2"]
    assert data.splits["train"][0].shape == (14, 2)


def test_split_is_seeded_disjoint_and_covers_every_row(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv", n=40)
    first = ready(CSVRegressionDataModule(str(path), target="price", features=["a", "b", "c"], seed=7))
    again = ready(CSVRegressionDataModule(str(path), target="price", features=["a", "b", "c"], seed=7))
    other = ready(CSVRegressionDataModule(str(path), target="price", features=["a", "b", "c"], seed=8))
    rows = first.split_rows
    together = torch.cat([rows["train"], rows["val"], rows["test"]])
    assert sorted(together.tolist()) == list(range(40))  # disjoint and complete
    for split in ("train", "val", "test"):
        assert torch.equal(rows[split], again.split_rows[split])
        assert torch.equal(first.splits[split][0], again.splits[split][0])
    assert not torch.equal(rows["test"], other.split_rows["test"])
    # Each split holds exactly its rows of the file, in the order of split_rows.
    raw = raw_columns(linear_table(40), ["a", "b", "c"])
    restored = first.splits["test"][0].double() * first.feature_std + first.feature_mean
    assert torch.allclose(restored, raw[rows["test"]], atol=1e-4)


def test_standardisation_uses_training_rows_only(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv", n=40)
    data = ready(CSVRegressionDataModule(str(path), target="price", features=["a", "b", "c"]))
    raw = raw_columns(linear_table(40), ["a", "b", "c"])
    train_raw = raw[data.split_rows["train"]]
    assert torch.allclose(data.feature_mean, train_raw.mean(dim=0))
    assert torch.allclose(data.feature_std, train_raw.std(dim=0, correction=0))
    # The statistics of all 40 rows differ, so the test above tells the two apart.
    assert not torch.allclose(data.feature_mean, raw.mean(dim=0), rtol=1e-3)
    train_x = data.splits["train"][0]
    assert torch.allclose(train_x.mean(dim=0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train_x.std(dim=0, correction=0), torch.ones(3), atol=1e-5)
    expected_val = (raw[data.split_rows["val"]] - train_raw.mean(dim=0)) / train_raw.std(dim=0, correction=0)
    assert torch.allclose(data.splits["val"][0].double(), expected_val, atol=1e-5)

    # Changing a held-out row changes nothing of the training data or its statistics.
    rows = linear_table(40)
    rows[1 + int(data.split_rows["test"][0])][1] = 1e6
    changed_path = write_rows(tmp_path / "changed.csv", rows)
    changed = ready(CSVRegressionDataModule(str(changed_path), target="price", features=["a", "b", "c"]))
    assert torch.equal(changed.feature_mean, data.feature_mean)
    assert torch.equal(changed.splits["train"][0], data.splits["train"][0])
    assert changed.splits["test"][0].abs().max() > 1e4


def test_constant_column_is_centred_not_divided_by_zero(tmp_path):
    rows = [["k", "x", "y"], *([1.5, i, i] for i in range(20))]
    data = ready(CSVRegressionDataModule(str(write_rows(tmp_path / "t.csv", rows)), target="y"))
    assert data.feature_std[0] == 1.0
    assert torch.equal(data.splits["train"][0][:, 0], torch.zeros(14))


def test_standardize_off_keeps_raw_values(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv", n=40)
    data = ready(CSVRegressionDataModule(str(path), "price", ["c"], standardize=False))
    raw = raw_columns(linear_table(40), ["c"])
    assert torch.allclose(data.splits["train"][0].double(), raw[data.split_rows["train"]], atol=1e-3)


def test_predict_path_uses_training_columns_and_statistics(tmp_path):
    train = write_linear_table(tmp_path / "houses.csv", n=40)
    # New houses: no target column, the columns in another order, one column the model does not use.
    new_rows = [["c", "note", "b", "a", "id"], [600, "big", 1, 0.5, "x"], [400, "", 9, -1, "y"]]
    new = write_rows(tmp_path / "new.csv", new_rows)
    data = ready(CSVRegressionDataModule(str(train), "price", ["a", "b", "c"], predict_path=str(new)))
    (x,) = data.splits["predict"]
    given = torch.tensor([[0.5, 1, 600], [-1, 9, 400]], dtype=torch.float64)
    expected = (given - data.feature_mean) / data.feature_std
    assert torch.allclose(x.double(), expected, atol=1e-5)


def test_batches_cover_the_training_split(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv", n=40)
    data = ready(CSVRegressionDataModule(str(path), "price", ["a", "b"], batch_size=8))
    batches = list(data.train_dataloader())
    assert [len(x) for x, _ in batches] == [8, 8, 8, 4]
    seen = torch.cat([y for _, y in batches]).flatten().sort().values
    assert torch.equal(seen, data.splits["train"][1].flatten().sort().values)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["a", "price"], [1, 2], [3, 4, 5]], "line 3 has 3 fields but the header has 2"),
        ([["a", "price"], [1, 2], [3]], "line 3 has 1 fields but the header has 2"),
        ([["a", "price"], [1, 2], ["abc", 4]], "column 'a' on line 3 holds 'abc', not a number"),
        ([["a", "price"], [1, 2], [3, "4,5"]], "column 'price' on line 3 holds '4,5', not a number"),
        ([["a", "price"], [1, 2], [3, 4], ["", 6]], "column 'a' is empty on line 4"),
        ([["a", "price"], [1, "NaN"]], "column 'price' on line 2 holds nan; fill in or drop"),
        ([["a", "price"], ["inf", 1]], "column 'a' on line 2 holds inf;"),
        ([["a", "price"]], "has a header but no rows"),
        ([], "is empty; expected a header row"),
        ([["a", "a", "price"], [1, 2, 3]], "names a more than once"),
        ([["a", "", "price"], [1, 2, 3]], "column 2 of the header has no name"),
    ],
)
def test_malformed_csv_gives_a_clear_error(tmp_path, rows, message):
    path = write_rows(tmp_path / "bad.csv", rows)
    data = CSVRegressionDataModule(str(path), target="price")
    with pytest.raises(CSVFormatError) as error:
        data.setup("fit")
    assert message in str(error.value) and str(path) in str(error.value)
    assert isinstance(error.value, ExperimentError) and "\n" not in str(error.value)


def test_missing_target_column_lists_the_columns(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv")
    with pytest.raises(DataConfigError, match=r"has no column 'PRICE'; its columns are: id, a, b, c, price"):
        CSVRegressionDataModule(str(path), target="PRICE").setup("fit")


def test_unknown_feature_columns_are_all_named(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv")
    with pytest.raises(DataConfigError, match=r"no column 'x', 'y'; its columns are: " + ", ".join(HEADER)):
        CSVRegressionDataModule(str(path), target="price", features=["a", "x", "y"]).setup("fit")


def test_target_among_features_and_repeated_feature(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv")
    with pytest.raises(DataConfigError, match="target 'price' is also listed among the features"):
        CSVRegressionDataModule(str(path), target="price", features=["a", "price"]).setup("fit")
    with pytest.raises(DataConfigError, match="features names a column twice"):
        CSVRegressionDataModule(str(path), target="price", features=["a", "a"]).setup("fit")


def test_non_numeric_column_is_an_error_only_when_used(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv")
    with pytest.raises(CSVFormatError, match="column 'id' on line 2 holds 'house-0', not a number"):
        CSVRegressionDataModule(str(path), target="price").setup("fit")


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"CSV file not found: .*nowhere\.csv"):
        CSVRegressionDataModule(str(tmp_path / "nowhere.csv"), target="price").setup("fit")
    path = write_linear_table(tmp_path / "houses.csv")
    data = CSVRegressionDataModule(str(path), "price", ["a"], predict_path=str(tmp_path / "new.csv"))
    with pytest.raises(DataNotFoundError, match=r"new\.csv"):
        data.setup("predict")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 0.0}, "val_fraction must be strictly between 0 and 1"),
        ({"test_fraction": 1.5}, "test_fraction must be strictly between 0 and 1"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be below 1 to leave rows for training"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"features": []}, "features is an empty list"),
    ],
)
def test_impossible_settings_fail_at_construction(kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        CSVRegressionDataModule("any.csv", target="y", **kwargs)


def test_too_few_rows_for_the_splits(tmp_path):
    path = write_linear_table(tmp_path / "houses.csv", n=3)
    message = r"has 3 rows: .* leave 3 for training, 0 for val and 0 for test"
    with pytest.raises(DataConfigError, match=message):
        CSVRegressionDataModule(str(path), "price", ["a"]).setup("fit")


def test_packaged_boston_table():
    data = ready(BostonHousingDataModule())
    x, y = data._table
    assert x.shape == (506, 13) and y.shape == (506, 1)
    assert data.target == "MEDV" and len(data.feature_names) == 13 and "MEDV" not in data.feature_names
    assert data.feature_names[0] == "CRIM" and data.feature_names[-1] == "LSTAT"
    # The tutorial's printout of boston_tensor[:2] and MEDV's known first values and range.
    first = [0.0063, 18.0, 2.31, 0.0, 0.538, 6.575, 65.2, 4.09, 1.0, 296.0, 15.3, 396.9, 4.98]
    assert torch.allclose(x[0], torch.tensor(first, dtype=torch.float64), atol=1e-4)
    assert x[1, 1].item() == 0.0 and x[1, 12].item() == pytest.approx(9.14)
    assert y[:2].flatten().tolist() == [24.0, 21.6]
    assert (y.min().item(), y.max().item()) == (5.0, 50.0)
    assert {k: len(v) for k, v in data.split_rows.items()} == {"test": 76, "val": 76, "train": 354}
    assert torch.allclose(data.splits["train"][0].mean(dim=0), torch.zeros(13), atol=1e-5)


def test_boston_without_column_b():
    features = ["CRIM", "ZN", "INDUS", "CHAS", "NOX", "RM", "AGE", "DIS", "RAD", "TAX", "PTRATIO", "LSTAT"]
    data = ready(BostonHousingDataModule(features=features))
    assert data.splits["train"][0].shape == (354, 12) and "B" not in data.feature_names


def test_boston_file_path_is_inside_the_package():
    import datamodules

    path = Path(str(BostonHousingDataModule().path))
    assert path.is_file() and Path(datamodules.__file__).parent in path.parents
