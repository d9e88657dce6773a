"""Numeric tables from CSV files for regression: ``CSVRegressionDataModule`` and the Boston house prices.

Lesson 数学构建模块 shows the Boston house-prices table as a 506x13 tensor; here that table is a
regression dataset. ``CSVRegressionDataModule`` reads any CSV with a header row, takes one column as the
target and some or all of the others as features, splits the rows into seeded, disjoint train, val and
test sets, and standardises the features with the training rows' mean and standard deviation only (so
no statistic of the held-out rows leaks into training). The target keeps its units, so losses and RMSE
read in them (Boston: thousands of dollars). Everything is held in memory and batched by indexing
(``TensorBatches``).

Parsing uses the standard library's ``csv`` module, not pandas: a table that fits in memory is read in
milliseconds either way, while the errors a user needs (which line has the wrong number of fields, which
cell of which column is not a number or is missing) are checks that would have to be written around
pandas too, and pandas would add a large dependency to every install and to the CLI's start-up.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

from core.domains import ExistingFile, Fraction, PositiveInt, Seed, require_at_least
from core.errors import DataConfigError, DataNotFoundError
from datamodules.tensors import InMemoryDataModule

#: The Boston house-prices table shipped inside the package (see ``BostonHousingDataModule``).
BOSTON_CSV = resources.files("datamodules").joinpath("resources", "boston_housing.csv")


class CSVFormatError(DataConfigError):
    """A CSV file that is not a numeric table; the message names the file, the line and the column."""


def read_header_and_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header's column names and every other non-blank row as ``(line number, fields)``.

    Raises ``CSVFormatError`` for an empty file, a blank or repeated column name, or a row whose
    number of fields differs from the header's.
    """
    # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark, which would otherwise
    # become part of the first column's name.
    with path.open("r", newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        header: list[str] | None = None
        rows: list[tuple[int, list[str]]] = []
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue  # blank lines, often one at the end of the file
            if header is None:
                header = [f.strip() for f in fields]
                continue
            if len(fields) != len(header):
                raise CSVFormatError(
                    f"{path}: line {reader.line_num} has {len(fields)} fields but the header has "
                    f"{len(header)}; every row needs one value per column"
                )
            rows.append((reader.line_num, fields))
    if header is None:
        raise CSVFormatError(f"{path} is empty; expected a header row of column names, then rows of numbers")
    if "" in header:
        raise CSVFormatError(f"{path}: column {header.index('') + 1} of the header has no name")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise CSVFormatError(f"{path}: the header names {', '.join(repeated)} more than once")
    return header, rows


def to_numbers(path: Path, column: str, cells: list[tuple[int, str]]) -> list[float]:
    """The cells of one column as floats; ``CSVFormatError`` names the first empty or non-numeric one.

    ``nan`` and ``inf`` parse as numbers here: ``check_table`` refuses them, over the whole table at once.
    """
    values = []
    for line, cell in cells:
        text = cell.strip()
        if not text:
            raise CSVFormatError(
                f"{path}: column {column!r} is empty on line {line}; fill in or drop rows with missing values"
            )
        try:
            values.append(float(text))
        except ValueError:
            message = f"{path}: column {column!r} on line {line} holds {text!r}, not a number"
            raise CSVFormatError(message) from None
    return values


@dataclass
class Table:
    """The numeric columns read from a CSV file: ``values`` (rows, columns) float64, the 1-based ``lines``
    of the file its rows came from, and the ``columns``' names."""

    path: Path
    columns: list[str]
    values: Tensor
    lines: Tensor
    #: whether ``check_table`` has passed it (a file is checked once, whatever the splits made from it)
    checked: bool = False


def check_table(table: Table) -> None:
    """Refuse a table with a value that is not finite (NaN, inf), naming the file, the 1-based line, the
    column and the value; one vectorised pass, the first bad cell looked for only when there is one."""
    finite = torch.isfinite(table.values)
    if bool(finite.all()):
        return
    row, column = (int(i) for i in (~finite).nonzero()[0])
    value = float(table.values[row, column])
    raise CSVFormatError(
        f"{table.path}: column {table.columns[column]!r} on line {int(table.lines[row])} holds {value}; fill "
        "in or drop rows with missing or infinite values"
    )


class CSVRegressionDataModule(InMemoryDataModule):
    """``(features, target)`` batches of shapes ``(B, n_features)`` and ``(B, 1)`` from a numeric CSV file.

    The rows are shuffled by ``seed`` and cut into test, val and train sets; ``split_rows`` records
    which 0-based data rows (not counting the header) went where. Columns not used as feature or target
    may hold anything (names, ids). ``predict`` serves the features of ``predict_path`` (a CSV with the
    same feature columns, read by name, standardised with the training statistics; a missing column is
    an error naming it) or, without one, of the test set; ``predictions.csv`` names each row by its file
    and line and gives the prediction under the target's name.

    Every cell used is checked once, when the file is read (``check_data``): a number, finite, in a row
    with as many fields as the header; an error names the file, the line and the column.

    Args:
        path: The CSV file (an existing file): a header row of column names, then one row per sample.
        target: Name of the column to predict.
        features: Names of the input columns (at least one); None for every column but the target.
        val_fraction: Fraction of the rows held out for validation (in (0, 1)).
        test_fraction: Fraction of the rows held out for testing (in (0, 1); with ``val_fraction``, below 1).
        standardize: Shift and scale each feature to mean 0 and standard deviation 1 over the training
            rows (a constant column is only shifted).
        predict_path: Optional CSV (an existing file) whose rows ``predict`` serves.
        batch_size: Rows per batch (>= 1).
        seed: Seeds the split and the training shuffle (0 to 2**32 - 1).
    """

    def __init__(
        self,
        path: ExistingFile,
        target: str,
        features: list[str] | None = None,
        val_fraction: Fraction = 0.15,
        test_fraction: Fraction = 0.15,
        standardize: bool = True,
        predict_path: ExistingFile | None = None,
        batch_size: PositiveInt = 32,
        seed: Seed = 42,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        for name, value in {"val_fraction": val_fraction, "test_fraction": test_fraction}.items():
            if not 0.0 < value < 1.0:
                raise DataConfigError(f"--data.{name} must be strictly between 0 and 1, got {value}")
        if val_fraction + test_fraction >= 1.0:
            raise DataConfigError(
                "--data.val_fraction + --data.test_fraction must be below 1 to leave rows for training, got "
                f"{val_fraction} + {test_fraction}"
            )
        require_at_least("data", 1, batch_size=batch_size)
        if features is not None and len(features) == 0:
            raise DataConfigError(
                "--data.features is an empty list; name at least one column, or leave it out"
            )
        # A str is a file system path; the packaged Boston file may be any importlib.resources Traversable.
        self.path = Path(path) if isinstance(path, str) else path
        self.predict_path = Path(predict_path) if predict_path is not None else None
        self.target = target
        self.features = list(features) if features is not None else None
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.standardize = standardize
        # Filled by load(): the columns used, the training statistics and the rows of each split.
        self.feature_names: list[str] = []
        self.feature_mean: Tensor | None = None
        self.feature_std: Tensor | None = None
        self.split_rows: dict[str, Tensor] = {}
        self._table: tuple[Tensor, Tensor] | None = None
        #: the tables read, for check_data: the training file's, and the predict file's once read
        self.tables: dict[str, Table] = {}
        #: each predicted row's file and line (``new.csv line 2``), in order: predictions.csv's first column
        self.predict_names: list[str] = []

    @property
    def target_names(self) -> list[str]:
        """The predicted column's name, which heads its column in ``predictions.csv``."""
        return [self.target]

    @property
    def in_features(self) -> int:
        """Feature columns per row; the command gives it to the model's ``in_features``."""
        self.load()
        return len(self.feature_names)

    def _read(self, path: Path, features: list[str] | None, target: str | None) -> tuple[list[str], Table]:
        """The names of ``features`` (None: every column but the target) and a ``Table`` of those columns,
        then the target's if given; every cell used is a number (``check_data`` checks the rest)."""
        if not path.is_file():
            raise DataNotFoundError(
                f"CSV file not found: {path}; give the path of a CSV with a header row (--data.path, "
                "--data.predict_path)"
            )
        header, rows = read_header_and_rows(path)
        if features is None:
            features = [name for name in header if name != self.target]
        wanted = [*features, target] if target is not None else features
        unknown = [name for name in wanted if name not in header]
        if unknown:
            raise DataConfigError(
                f"{path} has no column {', '.join(map(repr, unknown))}; its columns are: {', '.join(header)}"
            )
        if self.target in features:
            raise DataConfigError(f"the target {self.target!r} is also listed among the features; remove it")
        if len(set(features)) != len(features):
            raise DataConfigError(f"features names a column twice: {', '.join(features)}")
        if not rows:
            raise CSVFormatError(f"{path} has a header but no rows of data")
        columns = []
        for name in wanted:
            index = header.index(name)
            columns.append(to_numbers(path, name, [(line, fields[index]) for line, fields in rows]))
        values = torch.tensor(columns, dtype=torch.float64).T
        return features, Table(path, wanted, values, torch.tensor([line for line, _ in rows]))

    def check_data(self, split: str, tensors: tuple[Tensor, ...]) -> None:
        """Check the file behind ``split`` once: every cell used finite (``check_table``; parsing has made
        them numbers, in rows of the header's width). ``load`` calls it with ``split="table"`` as soon as
        the training file is read, before the rows are counted and split; the train, val and test splits
        are rows of that table, scaled by finite statistics, and need nothing more; ``predict`` checks
        ``predict_path``'s table, when there is one."""
        table = self.tables.get("predict" if split == "predict" else "table")
        if table is not None and not table.checked:
            check_table(table)
            table.checked = True

    def load(self) -> None:
        """Read the file, split its rows and compute the training statistics; once."""
        if self._table is not None:
            return
        self.feature_names, table = self._read(self.path, self.features, self.target)
        self.tables["table"] = table
        self.check_data("table", (table.values,))
        x, y = table.values[:, :-1], table.values[:, -1:]
        n = len(x)
        n_val, n_test = round(n * self.val_fraction), round(n * self.test_fraction)
        n_train = n - n_val - n_test
        # Two training rows at least: a standard deviation of one row is meaningless.
        if min(n_val, n_test) < 1 or n_train < 2:
            raise DataConfigError(
                f"{self.path} has {n} rows: val_fraction={self.val_fraction} and test_fraction="
                f"{self.test_fraction} leave {n_train} for training, {n_val} for val and {n_test} for test; "
                "each needs at least one (training two)"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        self.split_rows = {
            "test": order[:n_test],
            "val": order[n_test : n_test + n_val],
            "train": order[n_test + n_val :],
        }
        train_x = x[self.split_rows["train"]]
        if self.standardize:
            # Population standard deviation (as scikit-learn's StandardScaler); a constant column has
            # none, and is only centred.
            std = train_x.std(dim=0, correction=0)
            self.feature_mean, self.feature_std = train_x.mean(dim=0), torch.where(std > 0, std, 1.0)
        else:
            self.feature_mean, self.feature_std = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
        self._table = (x, y)

    def scale(self, x: Tensor) -> Tensor:
        """Features as the model sees them: standardised with the training statistics, float32."""
        return ((x - self.feature_mean) / self.feature_std).float()

    def make_split(self, split: str) -> tuple[Tensor, ...]:
        self.load()
        x, y = self._table
        if split == "predict":
            if self.predict_path is None:
                rows = self.split_rows["test"]
                lines = self.tables["table"].lines[rows].tolist()
                self.predict_names = [f"{self.path.name} line {n}" for n in lines]
                return (self.scale(x[rows]),)
            # The training columns, whatever else the file holds (its target column, if any, is unused).
            _, new = self._read(self.predict_path, self.feature_names, None)
            self.tables["predict"] = new
            self.predict_names = [f"{self.predict_path.name} line {n}" for n in new.lines.tolist()]
            return (self.scale(new.values),)
        rows = self.split_rows[split]
        return self.scale(x[rows]), y[rows].float()

    # --- for python -m experiments export -------------------------------------------------------------
    def export_batch(self, count: int) -> Tensor:
        """Up to ``count`` test rows as a user hands them to an exported model: the feature columns' raw
        values (``feature_names``, in that order), float32, not standardised."""
        self.load()
        x, _ = self._table
        return x[self.split_rows["test"][:count]].float()

    def export_preprocess(self) -> Callable[[Tensor], Tensor]:
        """Raw feature rows to the model's input, as ``scale`` makes them: standardised with the training
        rows' statistics, computed in float64 as the table is."""
        self.load()
        mean, std = self.feature_mean, self.feature_std
        return lambda rows: ((rows.double() - mean) / std).float()

    def export_description(self) -> dict[str, object]:
        """The exported input's name, columns and meaning, and the output's target (sidecar JSON)."""
        self.load()
        meaning = "rows of the feature columns' raw values, float32 (N, features), in the CSV's units"
        return {
            "input": {"name": "features", "columns": list(self.feature_names), "meaning": meaning},
            "output": {"targets": [self.target], "meaning": f"the predicted {self.target}, in its units"},
        }


class BostonHousingDataModule(CSVRegressionDataModule):
    """Boston house prices (Harrison and Rubinfeld, 1978): 506 census tracts, 13 features, target MEDV.

    MEDV is the median value of owner-occupied homes in $1000s. The table ships inside this package
    (``datamodules/resources/boston_housing.csv``), so the lesson needs no download.

    A known ethical problem: the feature ``B = 1000 (Bk - 0.63)²``, where Bk is the proportion of Black
    residents, encodes race, and was built on the assumption that racial self-segregation raises house
    prices; scikit-learn removed the dataset (``load_boston``, in 1.2) for that reason. It is kept here
    because it is the tutorial's example of a table as a tensor (数学构建模块), as a lesson in
    regression mechanics, not as a model of house prices to use. To leave the column out:
    ``--data.features '[CRIM, ZN, INDUS, CHAS, NOX, RM, AGE, DIS, RAD, TAX, PTRATIO, LSTAT]'`` (the
    model's ``in_features`` follows the data).

    Args:
        features: Names of the input columns (at least one); None for all 13.
        val_fraction: Fraction of the rows held out for validation (in (0, 1)).
        test_fraction: Fraction of the rows held out for testing (in (0, 1); with ``val_fraction``, below 1).
        standardize: Standardise the features with the training rows' statistics.
        predict_path: Optional CSV of houses (an existing file with the same feature columns) for
            ``predict``; else the test set.
        batch_size: Rows per batch (>= 1).
        seed: Seeds the split and the training shuffle (0 to 2**32 - 1).
    """

    def __init__(
        self,
        features: list[str] | None = None,
        val_fraction: Fraction = 0.15,
        test_fraction: Fraction = 0.15,
        standardize: bool = True,
        predict_path: ExistingFile | None = None,
        batch_size: PositiveInt = 32,
        seed: Seed = 42,
    ) -> None:
        super().__init__(
            path=BOSTON_CSV,
            target="MEDV",
            features=features,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            standardize=standardize,
            predict_path=predict_path,
            batch_size=batch_size,
            seed=seed,
        )
