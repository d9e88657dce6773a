"""Bad input of every kind through the real command: one ``error:`` line, exit status 2, nothing lost.

Each case is a mistake a user makes: in a config, on the command line, in a checkpoint, or in a lesson's
data files (every format the lessons read). It runs through ``experiments.main.main`` in a folder that
already holds finished runs, and must end with:
- exit status 2;
- exactly one line on stderr, starting with ``error:``, naming the file, key or value at fault (the
  case's ``expected`` text), and no ``Traceback`` and no warning (a fresh process would print those on
  stderr too);
- every file of the runs present before byte-identical after, and no new run folder left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from experiments.main import main
from tests.conftest import QUIET, config, run_experiments

#: Builds a case's inputs under the given folder; returns the command's arguments and the text the error
#: line must hold.
Build = Callable[[Path], tuple[list[str], str]]


@dataclass(frozen=True)
class Case:
    name: str
    build: Build


def lesson(name: str, *args: str) -> list[str]:
    return ["--config", config(name), *args]


def fit(name: str, *args: str) -> list[str]:
    return ["fit", *lesson(name, *args)]


def text(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --- data in each lesson's format -----------------------------------------------------------------------
def mnist(root: Path) -> Path:
    from tests.image_data import write_mnist

    return write_mnist(root / "mnist")


def mnist_magic(root: Path) -> tuple[list[str], str]:
    folder = mnist(root)
    path = folder / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x09\x99" + path.read_bytes()[4:])
    return fit("mnist_convnet", f"--data.data_dir={folder}", "--data.val_split=16"), "train-images-idx3-ubyte"


def mnist_truncated(root: Path) -> tuple[list[str], str]:
    folder = mnist(root)
    path = folder / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:20])
    return fit("mnist_convnet", f"--data.data_dir={folder}", "--data.val_split=16"), "train-labels-idx1-ubyte"


def cifar_corrupt(root: Path) -> tuple[list[str], str]:
    from tests.image_data import write_cifar10

    folder = write_cifar10(root / "cifar")  # its md5 sums cannot match torchvision's: "corrupted"
    return fit("simple_cnn", f"--data.data_dir={folder}"), "cifar-10-batches-py"


def image_folder(root: Path, **kwargs) -> Path:
    from tests.image_data import write_image_folder

    return write_image_folder(root / "images", **kwargs)


def folder_args(folder: Path, *extra: str) -> list[str]:
    data = ["--data", "ImageFolderDataModule", f"--data.data_dir={folder}", "--data.val_split=6"]
    return fit("simple_cnn", *data, "--model.num_classes=3", "--data.image_size=32", *extra)


def corrupt_jpeg(root: Path, *extra: str) -> tuple[list[str], str]:
    folder = image_folder(root)
    text(folder / "train" / "cat" / "0.jpg", b"\xff\xd8\xff\xe0 this is not a JPEG")
    return folder_args(folder, *extra), "0.jpg"


def faces(root: Path) -> Path:
    from tests.face_data import write_faces

    return write_faces(root / "faces", count=6)


def faces_args(folder: Path, *extra: str) -> list[str]:
    sizes = ["--data.image_size=32", "--data.crop_size=28", "--data.val_split=2"]
    return fit("face_landmarks", f"--data.data_dir={folder}", *sizes, *extra)


def faces_short_row(root: Path) -> tuple[list[str], str]:
    folder = faces(root)
    csv = folder / "face_landmarks.csv"
    lines = csv.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:50])
    csv.write_text("\n".join(lines) + "\n")
    return faces_args(folder), "face_landmarks.csv"


def faces_missing_image(root: Path) -> tuple[list[str], str]:
    folder = faces(root)
    (folder / "face_02.jpg").unlink()
    return faces_args(folder), "face_02.jpg"


def coco(root: Path) -> Path:
    from tests.coco_data import write_coco_captions

    folder = write_coco_captions(root / "coco", "annotations/captions_train2017.json", "train2017", 4)
    return write_coco_captions(folder, "annotations/captions_val2017.json", "val2017", 2, first_id=100)


def coco_args(folder: Path) -> list[str]:
    return fit("coco_captions", f"--data.data_dir={folder}", "--data.num_workers=0", "--data.min_count=1")


def coco_bad_json(root: Path) -> tuple[list[str], str]:
    folder = coco(root)
    text(folder / "annotations" / "captions_train2017.json", '{"images": [')
    return coco_args(folder), "captions_train2017.json"


def treebank(root: Path, train: str | None = None) -> Path:
    from tests.tree_data import write_treebank

    folder = write_treebank(root / "sst", {"train": 20, "dev": 6, "test": 0})
    if train is not None:
        text(folder / "train.txt", train)
    return folder


def corpus(root: Path, content: str | bytes) -> Path:
    return text(root / "corpus.txt", content)


def word2vec_args(path: Path, *extra: str) -> list[str]:
    return fit("word2vec", f"--data.path={path}", *extra)


def csv_args(path: Path, *extra: str) -> list[str]:
    return fit("boston_housing", "--data", "CSVRegressionDataModule", f"--data.path={path}", *extra)


def csv_table(root: Path, rows: list[str]) -> Path:
    return text(root / "table.csv", "\n".join(["id,a,b,price", *rows]) + "\n")


# --- checkpoints ------------------------------------------------------------------------------------------
def last_checkpoint(workspace: Path, name: str) -> Path:
    return workspace / "lightning_logs" / name / "version_0" / "checkpoints" / "last.ckpt"


def truncated_checkpoint(root: Path) -> tuple[list[str], str]:
    good = last_checkpoint(root.parents[1], "linear_regression").read_bytes()
    path = text(root / "truncated.ckpt", good[: len(good) // 2])
    return ["test", *lesson("linear_regression"), f"--ckpt_path={path}"], "truncated.ckpt"


def non_checkpoint(root: Path) -> tuple[list[str], str]:
    path = root / "tensor.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.zeros(3), path)
    return ["test", *lesson("linear_regression"), f"--ckpt_path={path}"], "tensor.ckpt"


def untrusted_checkpoint(root: Path) -> tuple[list[str], str]:
    # A path object among the hyperparameters: not a tensor or a plain value, so not unpickled.
    good = torch.load(last_checkpoint(root.parents[1], "linear_regression"), weights_only=True)
    path = root / "with_a_path.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**good, "hyper_parameters": {"root": pathlib.PurePosixPath("data")}}, path)
    return ckpt_test(path), f"{path} holds objects this command will not unpickle (pathlib.PurePosixPath)"


def other_lessons_checkpoint(subcommand: str) -> Build:
    def build(root: Path) -> tuple[list[str], str]:
        path = last_checkpoint(root.parents[1], "sine_rnn")
        return [subcommand, *lesson("linear_regression"), f"--ckpt_path={path}"], "SineRNN"

    return build


def const(args: list[str], expected: str) -> Build:
    return lambda root: (args, expected)


def ckpt_test(path: Path | str) -> list[str]:
    return ["test", *lesson("linear_regression"), f"--ckpt_path={path}"]


def config_file(root: Path, name: str, content: str) -> list[str]:
    return ["fit", "--config", str(text(root / name, content))]


def unknown_key(root: Path) -> tuple[list[str], str]:
    extra = str(text(root / "extra.yaml", "bogus_key: 1\n"))
    return [*fit("linear_regression"), "--config", extra], "bogus_key"


def stacked_config(lesson_name: str, name: str, content: str, expected: str) -> Build:
    """The lesson's config with a second ``--config`` file (``name``, holding ``content``) stacked on it."""

    def build(root: Path) -> tuple[list[str], str]:
        return [*fit(lesson_name), "--config", str(text(root / name, content))], expected

    return build


def treebank_case(train: str) -> Build:
    return lambda root: (fit("tree_lstm", f"--data.data_dir={treebank(root, train)}"), "train.txt")


def corpus_case(content: str | bytes, expected: str, *extra: str) -> Build:
    return lambda root: (word2vec_args(corpus(root, content), *extra), expected)


def csv_case(rows: list[str], target: str, expected: str) -> Build:
    # The id column holds names, so the features are named.
    features = "--data.features=[a,b]"
    return lambda root: (csv_args(csv_table(root, rows), f"--data.target={target}", features), expected)


def predict_dir_empty(root: Path) -> tuple[list[str], str]:
    args = faces_args(faces(root), f"--data.predict_dir={root}")
    return ["predict", *args[1:]], str(root)


LR = "linear_regression"
CASES = [
    # the config and the command line
    Case("config_missing", const(["fit", "--config", "missing.yaml"], "missing.yaml")),
    Case("config_empty", lambda r: (config_file(r, "empty.yaml", ""), "empty.yaml")),
    Case("config_not_yaml", lambda r: (config_file(r, "bad.yaml", "model: [1, 2\n"), "bad.yaml")),
    Case("config_a_folder", const(["fit", "--config", "."], ".")),
    Case("config_unknown_key", unknown_key),
    # a typo in a config file: named by file and line, with "did you mean"
    Case(
        "config_typo_trainer_key",
        stacked_config(
            LR,
            "typo.yaml",
            "trainer:\n  max_epoch: 3\n",
            "typo.yaml, line 2: unknown key trainer.max_epoch; did you mean trainer.max_epochs?",
        ),
    ),
    Case(
        "config_typo_model_argument",
        stacked_config(
            "first_network",
            "hiden.yaml",
            "model:\n  init_args:\n    n_hh: 3\n",
            "hiden.yaml, line 3: model.init_args.n_hh: FeedForwardNet has no argument 'n_hh'; "
            "did you mean model.init_args.n_h?",
        ),
    ),
    Case(
        "config_typo_part_group",
        stacked_config(
            LR,
            "group.yaml",
            "seed_everything: 1\ncheckpoin:\n  monitor: val/loss\n",
            "group.yaml, line 3: unknown key checkpoin.monitor; did you mean checkpoint.monitor?",
        ),
    ),
    Case(
        "config_class_path_model",
        stacked_config(
            LR,
            "model.yaml",
            "model:\n  class_path: modules.LogisticRegresion\n",
            'model.yaml, line 2: model.class_path: unknown class "modules.LogisticRegresion"; did you '
            "mean LogisticRegression? choose one of: ",
        ),
    ),
    Case(
        "config_class_path_data",
        stacked_config(
            LR,
            "data.yaml",
            "data:\n  class_path: datamodules.MNISTDataModul\n",
            'data.yaml, line 2: data.class_path: unknown class "datamodules.MNISTDataModul"; did you '
            "mean MNISTDataModule? choose one of: ",
        ),
    ),
    Case("flag_unknown", const(fit(LR, "--trainer.bogus=1"), "--trainer.bogus")),
    Case("flag_typo_model", const(fit("first_network", "--model.n_hh=3"), "--model.n_h")),
    # the command's own groups of flags (experiments/parts.py): a typo in the group or in its key
    Case(
        "flag_typo_part_group", const(fit(LR, "--checkpoin.monitor=x"), "did you mean --checkpoint.monitor")
    ),
    Case(
        "flag_typo_part_key",
        const(fit(LR, "--nan_guard.every_n_step=3"), "did you mean --nan_guard.every_n_steps"),
    ),
    Case(
        "flag_part_key_unknown",
        const(fit(LR, "--preemption.signl=3"), "--preemption.signl=3: --preemption takes: scontrol, enabled"),
    ),
    # A prefix of a flag is not taken for it (argparse would): a typo must not set another key.
    Case("flag_abbreviated", const(fit(LR, "--trainer.max_epoch=1"), "did you mean --trainer.max_epochs")),
    Case("flag_wrong_type", const(fit(LR, "--trainer.max_epochs=abc"), "trainer.max_epochs")),
    Case("flag_seed_wrong_type", const(fit(LR, "--seed_everything=abc"), "seed_everything")),
    Case("subcommand_unknown", const(["train", *lesson(LR)], "train")),
    Case("model_class_unknown", const(fit(LR, "--model=Nope"), "Nope")),
    Case("data_class_unknown", const(fit(LR, "--data=Nope"), "Nope")),
    Case("optimizer_unknown", const(fit(LR, "--model.optimizer=torch.optim.Nope"), "torch.optim.Nope")),
    Case("learning_rate_negative", const(fit(LR, "--model.optimizer.lr=-0.1"), "-0.1")),
    Case("batch_size_zero", const(fit(LR, "--data.batch_size=0"), "batch_size")),
    Case("batch_size_negative", const(fit("first_network", "--data.batch_size=-1"), "batch_size")),
    Case("val_fraction_too_big", const(fit(LR, "--data.val_fraction=2"), "val_fraction")),
    Case("compile_unsupported", const(fit("sine_rnn", "--compile.enabled=true"), "SineRNN is not compiled")),
    Case("compile_mode_unknown", const(fit(LR, "--compile.mode=fast"), "'fast'")),
    Case(
        "compile_backend_unknown", const(fit(LR, "--compile.enabled=true", "--compile.backend=nope"), "nope")
    ),
    Case("precision_unknown", const(fit(LR, "--trainer.precision=7"), "precision")),
    Case("shapes_linear_vs_random", const(fit(LR, "--data=RandomTensorDataModule"), "10")),
    Case("shapes_first_network", const(fit("first_network", "--model.n_in=3"), "n_in")),
    Case("shapes_scratch", const(fit("scratch_network", "--model.input_size=3"), "--model.input_size")),
    Case("hidden_size_zero", const(fit("scratch_network", "--model.hidden_size=0"), "hidden_size")),
    # checkpoints
    Case("ckpt_missing", const(ckpt_test("nowhere.ckpt"), "nowhere.ckpt")),
    Case("ckpt_empty", lambda r: (ckpt_test(text(r / "empty.ckpt", b"")), "empty.ckpt")),
    Case("ckpt_plain_text", lambda r: (ckpt_test(text(r / "notes.txt", "my notes")), "notes.txt")),
    Case("ckpt_truncated", truncated_checkpoint),
    Case("ckpt_not_a_checkpoint", non_checkpoint),
    Case("ckpt_a_folder", lambda r: (ckpt_test(r.parents[1]), str(r.parents[1]))),
    Case("ckpt_untrusted", untrusted_checkpoint),
    Case(
        "ckpt_weights_only_false",
        lambda r: (
            [*ckpt_test(last_checkpoint(r.parents[1], "linear_regression")), "--weights_only=false"],
            "--weights_only false: this command reads every checkpoint weights-only",
        ),
    ),
    Case("ckpt_other_lesson_test", other_lessons_checkpoint("test")),
    Case("ckpt_other_lesson_fit", other_lessons_checkpoint("fit")),
    Case(
        "ckpt_best_without_runs",
        const(["test", *lesson("first_network"), "--ckpt_path=best"], "first_network"),
    ),
    Case(
        "ckpt_last_without_runs",
        const(["validate", *lesson("scratch_network"), "--ckpt_path=last"], "scratch"),
    ),
    # image data
    Case("mnist_absent", const(fit("mnist_convnet", "--data.data_dir=absent"), "absent")),
    Case("mnist_wrong_magic", mnist_magic),
    Case("mnist_truncated", mnist_truncated),
    Case(
        "mnist_val_split_too_big",
        lambda r: (fit("mnist_convnet", f"--data.data_dir={mnist(r)}"), "val_split"),
    ),
    Case("cifar_absent", const(fit("simple_cnn", "--data.data_dir=absent"), "absent")),
    Case("cifar_corrupted", cifar_corrupt),
    Case("image_folder_absent", const(folder_args(Path("absent")), "absent")),
    Case("image_folder_corrupt_jpeg", corrupt_jpeg),
    Case(
        "image_folder_corrupt_streamed",
        lambda r: corrupt_jpeg(r, "--data.in_memory=false", "--data.num_workers=0"),
    ),
    Case("image_folder_wrong_size", lambda r: (folder_args(image_folder(r), "--data.image_size=16"), "16")),
    # faces
    Case("faces_absent", const(faces_args(Path("absent")), "face_landmarks.csv")),
    Case("faces_short_row", faces_short_row),
    Case("faces_missing_image", faces_missing_image),
    Case("faces_predict_dir_empty", predict_dir_empty),
    # COCO
    Case("coco_absent", const(coco_args(Path("absent")), "captions_train2017.json")),
    Case("coco_not_json", coco_bad_json),
    Case("coco_missing_images", lambda r: (coco_args(coco_missing(r)), "missing")),
    # SST trees
    Case("sst_absent", const(fit("tree_lstm", "--data.data_dir=absent"), "train.txt")),
    Case("sst_unbalanced", treebank_case("(3 (2 good) (3 fun)\n")),
    Case("sst_bad_label", treebank_case("(9 (2 good) (3 fun))\n")),
    Case("sst_mode_unknown", const(fit("tree_lstm", "--data.mode=ternary"), "ternary")),
    # text corpus
    Case("corpus_absent", const(word2vec_args(Path("absent.txt")), "absent.txt")),
    Case("corpus_empty", corpus_case(" ... !!\n", "corpus.txt")),
    Case("corpus_not_utf8", corpus_case(b"word " * 20_001 + b"\xff\xfe more\n", "byte 100005, line 1")),
    Case("corpus_one_word", corpus_case("again " * 300, "again", "--data.min_count=1")),
    Case("corpus_min_count_too_high", corpus_case("a b a\n", "min_count", "--data.min_count=9")),
    Case("corpus_window_zero", corpus_case("a b a\n", "window", "--data.window=0")),
    # CSV tables
    Case("csv_absent", const(csv_args(Path("absent.csv"), "--data.target=price"), "absent.csv")),
    Case("csv_unknown_target", csv_case(["h1,1,2,3"], "cost", "cost")),
    Case("csv_not_a_number", csv_case(["h1,1,2,3", "h2,1,x,4"], "price", "x")),
    Case("csv_missing_value", csv_case(["h1,1,2,3", "h2,1,,4"], "price", "b")),
    # the from-scratch lesson's own data
    Case(
        "study_scores_mismatch",
        const(fit("scratch_network", "--data.hours=[[1,2],[3,4]]", "--data.scores=[5]"), "scores"),
    ),
]


def coco_missing(root: Path) -> Path:
    folder = coco(root)
    next((folder / "train2017").iterdir()).unlink()
    return folder


def tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content's hash, and every folder (an empty run folder left
    behind is a change too)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        if path.is_file()
        else "/"
        for path in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding two finished runs (linear_regression, sine_rnn), with their checkpoints."""
    root = tmp_path_factory.mktemp("bad_input")
    with contextlib.chdir(root):
        for name in ("linear_regression", "sine_rnn"):
            main(
                [
                    "fit",
                    *lesson(name),
                    "--trainer.max_epochs=2",
                    "--trainer.check_val_every_n_epoch=1",
                    *QUIET,
                ]
            )
    return root


def test_the_table_has_fifty_cases_or_more() -> None:
    assert len(CASES) >= 50 and len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    case: Case, workspace: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    monkeypatch.setattr(sys, "argv", ["experiments"])  # as a shell runs it: no pytest arguments
    args, expected = case.build(workspace / "inputs" / case.name)
    before = tree(workspace / "lightning_logs")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as stop:
        warnings.simplefilter("always")
        main([*args, *QUIET])
    out, err = capsys.readouterr()
    assert stop.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert not [str(w.message) for w in caught], "a warning would add lines to stderr"
    assert tree(workspace / "lightning_logs") == before


#: Cases run as a user runs them, in a fresh ``python -m experiments`` process: what reaches a real
#: stderr (Lightning's and the libraries' own output included) is the one error line.
IN_A_PROCESS = ["config_unknown_key", "config_class_path_model", "flag_typo_model", "mnist_wrong_magic",
                "ckpt_truncated", "ckpt_untrusted", "image_folder_corrupt_streamed",
                "corpus_not_utf8"]  # fmt: skip


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_a_real_stderr_holds_one_line(name: str, workspace: Path) -> None:
    case = next(case for case in CASES if case.name == name)
    args, expected = case.build(workspace / "inputs" / f"process_{name}")
    before = tree(workspace / "lightning_logs")
    done = run_experiments([*args, *QUIET], cwd=workspace)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], done.stderr[-3000:]
    assert tree(workspace / "lightning_logs") == before


def test_a_failed_first_run_leaves_no_folder_behind(in_tmp: Path, mnist_dir: Path) -> None:
    # The error comes at setup, after the logger made its folders (the val split is larger than the data).
    with pytest.raises(SystemExit):
        main([*fit("mnist_convnet", f"--data.data_dir={mnist_dir}", "--data.val_split=1000"), *QUIET])
    assert sorted(path.name for path in in_tmp.iterdir()) == [mnist_dir.name]  # no lightning_logs
