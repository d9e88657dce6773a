"""What the tabular, text and generated-data lessons read is checked once, at setup, and their arguments
have domains.

Each data check gets a small file in its genuine format with ONE bad value, and must refuse it at setup
with a ``DataConfigError`` naming the file, the line (1-based, as an editor shows it) or sample, and the
value. Each lesson's ``--data.*`` arguments outside their domain end the command with exit status 2 and
one ``error:`` line naming the flag.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor

from core.errors import DataConfigError
from datamodules.line import LineDataModule
from datamodules.random_tensors import RandomTensorDataModule
from datamodules.sine_wave import SineWaveDataModule
from datamodules.study_scores import StudyScoresDataModule
from datamodules.tabular import BOSTON_CSV, CSVRegressionDataModule
from datamodules.tensors import InMemoryDataModule
from datamodules.text_corpus import TextCorpusDataModule
from datamodules.treebank import TreebankDataModule
from experiments.main import main
from tests.conftest import QUIET, config
from tests.tabular_data import linear_table, write_rows
from tests.tree_data import write_treebank


def error_of(make: object) -> str:
    with pytest.raises(DataConfigError) as info:
        make()  # type: ignore[operator]
    message = str(info.value)
    assert "\n" not in message
    return message


# --- CSV tables -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["inf", "-inf", "nan"])
def test_a_non_finite_cell_names_the_file_line_column_and_value(tmp_path: Path, bad: str) -> None:
    rows = linear_table(20)
    rows[7][2] = bad  # the 8th row written: line 8 of the file, column "b"
    path = write_rows(tmp_path / "houses.csv", rows)
    data = CSVRegressionDataModule(str(path), target="price", features=["a", "b", "c"])
    message = error_of(lambda: data.setup("fit"))
    assert message.startswith(
        f"{path}: column 'b' on line 8 holds {bad.lstrip('-') if bad == 'nan' else bad};"
    )


def test_the_boston_table_with_one_bad_target(tmp_path: Path) -> None:
    lines = Path(str(BOSTON_CSV)).read_text(encoding="utf-8").splitlines()
    fields = lines[300].split(",")
    fields[-1] = "inf"  # MEDV of the 300th house: line 301
    lines[300] = ",".join(fields)
    path = tmp_path / "boston.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    data = CSVRegressionDataModule(str(path), target="MEDV")
    assert f"{path}: column 'MEDV' on line 301 holds inf;" in error_of(lambda: data.setup("fit"))


def test_a_bad_predict_file_is_named_and_the_training_file_is_checked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = write_rows(tmp_path / "houses.csv", linear_table(20))
    new = linear_table(3)
    new[2][1] = "nan"  # line 3, column "a"
    predict = write_rows(tmp_path / "new.csv", new)
    data = CSVRegressionDataModule(str(train), "price", ["a", "b", "c"], predict_path=str(predict))
    checked: list[Path] = []
    import datamodules.tabular as tabular

    real = tabular.check_table
    monkeypatch.setattr(tabular, "check_table", lambda table: checked.append(table.path) or real(table))
    data.setup("fit")
    data.setup("test")
    assert checked == [train]  # read and checked once for train, val and test
    assert f"{predict}: column 'a' on line 3 holds nan;" in error_of(lambda: data.setup("predict"))


# --- SST trees ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("split", "stage"), [("train", "fit"), ("dev", "fit"), ("test", "test")])
def test_a_label_outside_the_five_classes_names_the_file_and_line(
    tmp_path: Path, split: str, stage: str
) -> None:
    folder = write_treebank(tmp_path / "sst", {"train": 30, "dev": 10, "test": 10})
    path = folder / f"{split}.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[4] = re.sub(r"^\(\d", "(7", lines[4])  # the root label of line 5
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = error_of(lambda: TreebankDataModule(data_dir=str(folder)).setup(stage))
    assert message.startswith(f"{path}, line 5: label 7 is outside 0..4 (SST has 5 sentiment classes)")


def test_an_inner_label_and_blank_lines_count_in_the_line_number(tmp_path: Path) -> None:
    folder = write_treebank(tmp_path / "sst", {"train": 10, "dev": 4})
    path = folder / "train.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = "(3 (2 good) (12 fun))"
    path.write_text("\n\n" + "\n".join(lines) + "\n", encoding="utf-8")  # two blank lines first
    message = error_of(lambda: TreebankDataModule(data_dir=str(folder)).setup("fit"))
    assert message.startswith(f"{path}, line 5: label 12 is outside 0..4")


# --- the word2vec corpus -----------------------------------------------------------------------------------
def corpus_data(path: Path, **kwargs: object) -> TextCorpusDataModule:
    return TextCorpusDataModule(str(path), min_count=1, sample=0, prefetch_batches=0, **kwargs)  # type: ignore[arg-type]


def cached(tmp_path: Path) -> tuple[Path, Path, TextCorpusDataModule]:
    """A corpus read once into ``cache``; returns the corpus, the cache folder and the first reader."""
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat\nthe dog ate the cat food\n" * 20, encoding="utf-8")
    cache = tmp_path / "cache"
    first = corpus_data(text, cache_dir=str(cache))
    first.prepare()
    return text, cache, first


def test_an_encoded_cache_file_with_an_id_outside_the_vocabulary(tmp_path: Path) -> None:
    text, cache, first = cached(tmp_path)
    (encoded,) = cache.glob("*.encoded")
    pairs = torch.from_file(str(encoded), size=2 * first.corpus.corpus_words, dtype=torch.int32).view(-1, 2)
    pairs[9, 0] = 1000  # word 9's id
    encoded.write_bytes(pairs.numpy().tobytes())
    message = error_of(corpus_data(text, cache_dir=str(cache)).prepare)
    assert message.startswith(
        f"{encoded}: word 9 (counting from 0) has id 1000, outside the vocabulary's 0.."
    )
    assert "delete them and run again" in message


def test_a_cache_whose_counts_disagree_with_its_encoded_words(tmp_path: Path) -> None:
    text, cache, _ = cached(tmp_path)
    (words,) = cache.glob("*.words.tsv")
    words.write_text(words.read_text(encoding="utf-8").replace("cat\t40", "cat\t41"), encoding="utf-8")
    message = error_of(corpus_data(text, cache_dir=str(cache)).prepare)
    assert "'cat' occurs 40 times, but" in message and str(words) in message


def test_a_damaged_word_list_names_its_line(tmp_path: Path) -> None:
    text, cache, _ = cached(tmp_path)
    (words,) = cache.glob("*.words.tsv")
    lines = words.read_text(encoding="utf-8").splitlines()
    lines[2] = "sat 20"  # a space for the tab: line 3
    words.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = error_of(corpus_data(text, cache_dir=str(cache)).prepare)
    assert message.startswith(f"{words}, line 3: 'sat 20' is not a word, a tab and a count")


def test_a_truncated_encoded_file(tmp_path: Path) -> None:
    text, cache, _ = cached(tmp_path)
    (encoded,) = cache.glob("*.encoded")
    encoded.write_bytes(encoded.read_bytes()[:-3])
    message = error_of(corpus_data(text, cache_dir=str(cache)).prepare)
    assert message.startswith(f"{encoded} holds ") and "not a whole number of 8-byte records" in message


def test_a_token_file_with_an_id_outside_its_word_list(tmp_path: Path) -> None:
    text, cache, first = cached(tmp_path)
    (tokens,) = cache.glob("*.tokens")
    for encoded in cache.glob("*.encoded"):
        encoded.unlink()  # encoded again from the token file
    stream = torch.from_file(str(tokens), size=first.corpus.raw_tokens, dtype=torch.int32).clone()
    stream[4] = 77
    tokens.write_bytes(stream.numpy().tobytes())
    message = error_of(corpus_data(text, cache_dir=str(cache)).prepare)
    assert message.startswith(f"{tokens}: token 4 (counting from 0) is id 77, but")


def test_a_corpus_without_a_pair_of_neighbours_for_the_window(tmp_path: Path) -> None:
    text = tmp_path / "one_word_lines.txt"
    text.write_text("cat\ndog\n" * 50, encoding="utf-8")  # every sentence is one word: no window has a pair
    message = error_of(corpus_data(text).prepare)
    assert f"path={text} leaves no pair of neighbouring words in one sentence" in message


def test_a_sound_corpus_passes_and_is_checked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text, cache, _ = cached(tmp_path)
    calls: list[int] = []
    data = corpus_data(text, cache_dir=str(cache))
    real = data.check_data
    monkeypatch.setattr(data, "check_data", lambda corpus: calls.append(1) or real(corpus))
    data.prepare()
    data.setup("fit")
    batches = list(data.train_dataloader()) + list(data.val_dataloader())
    data.teardown("fit")
    assert batches and calls == [1]


# --- tensors made in memory ------------------------------------------------------------------------------
class Tensors(InMemoryDataModule):
    """Serves the given tensors as every split."""

    def __init__(self, *tensors: Tensor) -> None:
        super().__init__(batch_size=2, seed=0)
        self.tensors = tensors

    def make_split(self, split: str) -> tuple[Tensor, ...]:
        return self.tensors


def test_the_generic_check_names_the_split_tensor_sample_and_value() -> None:
    x = torch.zeros(6, 3)
    x[4, 1] = float("nan")
    message = error_of(lambda: Tensors(x, torch.ones(6)).setup("fit"))
    assert (
        message
        == "Tensors's train split: tensor 0 of sample 4 (counting from 0) holds nan; every value must be a "
        "finite number"
    )
    message = error_of(lambda: Tensors(torch.zeros(6, 3), torch.ones(5)).setup("test"))
    assert (
        message.startswith("Tensors's test split: the tensors need one entry per sample")
        and "(5,)" in message
    )


def test_study_scores_outside_their_domains() -> None:
    nan = float("nan")
    assert "--data.hours: hours of sample 1 (counting from 0) holds nan" in error_of(
        lambda: StudyScoresDataModule(hours=[[1, 2], [nan, 3]], scores=[1, 2]).setup("fit")
    )
    assert (
        "--data.scores: entry 2 (counting from 0) holds 300.0; expected a score within "
        "0..--data.max_score=100"
        in error_of(lambda: StudyScoresDataModule(scores=[92, 100, 300]).setup("fit"))
    )
    assert (
        "--data.hours: entry 0 (counting from 0) holds [-2.0, 9.0]; expected no negative value"
        in error_of(lambda: StudyScoresDataModule(hours=[[-2, 9], [1, 5], [3, 6]]).setup("fit"))
    )
    assert "--data.predict_hours: predict_hours of sample 0 (counting from 0) holds inf" in error_of(
        lambda: StudyScoresDataModule(predict_hours=[[4, float("inf")]]).setup("predict")
    )


@pytest.mark.parametrize(
    ("make", "flag"),
    [
        (
            lambda: LineDataModule(n_points=2, val_fraction=0.1),
            "--data.n_points=2 with --data.val_fraction=0.1",
        ),
        (lambda: LineDataModule(val_fraction=0.0), "--data.val_fraction"),
        (lambda: LineDataModule(n_test=0), "--data.n_test"),
        (lambda: RandomTensorDataModule(n_val=0), "--data.n_val"),
        (
            lambda: SineWaveDataModule(t_start=5.0, t_end=5.0),
            "--data.t_end=5.0 must be above --data.t_start=5.0",
        ),
        (lambda: SineWaveDataModule(n_points=1), "--data.n_points"),
        (lambda: TreebankDataModule(min_freq=0), "--data.min_freq"),
        (lambda: TextCorpusDataModule(prefetch_batches=-1), "--data.prefetch_batches"),
        (
            lambda: CSVRegressionDataModule("x.csv", "y", val_fraction=0.5, test_fraction=0.5),
            "--data.val_fraction",
        ),
    ],
)
def test_a_python_caller_gets_the_same_refusals(make: object, flag: str) -> None:
    assert flag in error_of(make)


# --- argument domains through the command -----------------------------------------------------------------
OUT_OF_DOMAIN = [
    ("linear_regression", "val_fraction", "1"),
    ("linear_regression", "noise_std", "-0.5"),
    ("first_network", "n_train", "-3"),
    ("sine_rnn", "t_end", "nan"),
    ("scratch_network", "hours", "[[1,-2],[3,4],[5,6]]"),
    ("boston_housing", "test_fraction", "-0.1"),
    ("boston_housing", "predict_path", "no_such_file.csv"),
    ("tree_lstm", "min_freq", "0"),
    ("tree_lstm", "data_dir", "{file}"),
    ("word2vec", "val_fraction", "2.5"),
    ("word2vec", "prefetch_batches", "-1"),
    ("word2vec", "cache_dir", "{file}"),
]


@pytest.mark.parametrize(
    ("lesson", "key", "value"), OUT_OF_DOMAIN, ids=[f"{c[0]}-{c[1]}" for c in OUT_OF_DOMAIN]
)
def test_an_argument_outside_its_domain_is_one_line_naming_the_flag(
    lesson: str,
    key: str,
    value: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["experiments"])
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", config(lesson), f"--data.{key}={value.format(file=a_file)}", *QUIET])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: --data.{key}"), lines[0]
    assert not (tmp_path / "lightning_logs").exists()  # refused before anything was made


@pytest.mark.parametrize(
    ("build", "flag"),
    [
        (lambda: LineDataModule(n_points=100_000), "--data.n_points=100000"),
        (lambda: RandomTensorDataModule(n_train=100_000), "n_train=100000"),
        (lambda: SineWaveDataModule(n_points=100_000), "--data.n_points=100000"),
    ],
)
def test_generated_data_larger_than_the_free_memory_is_refused_before_it_is_made(
    monkeypatch: pytest.MonkeyPatch, build, flag: str
) -> None:
    import datamodules.tensors

    monkeypatch.setattr(datamodules.tensors, "available_memory", lambda: 1_000_000)  # 1 MB free
    with pytest.raises(DataConfigError, match=rf"{re.escape(flag)}.* needs 0\.\d GB of memory, and this"):
        build()
    monkeypatch.setattr(datamodules.tensors, "available_memory", lambda: 10**12)
    build()  # the same size fits on a machine with the memory


def test_the_free_memory_is_read() -> None:
    from datamodules.tensors import available_memory

    free = available_memory()
    if sys.platform.startswith("linux"):  # /proc/meminfo's MemAvailable
        assert free is not None and free > 0
    else:
        assert free is None or free > 0
