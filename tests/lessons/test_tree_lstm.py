"""configs/tree_lstm.yaml through the CLI on a treebank written here: every subcommand with
fast_dev_run for both cells and both modes, a checkpoint that keeps its vocabulary, the missing-file
error."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from datamodules import TreebankDataModule
from experiments.main import main
from tests.conftest import QUIET, config
from tests.tree_data import write_treebank

# Small sizes keep a step fast; the config's own values are what is under test otherwise.
SMALL = ["--model.init_args.embedding_dim=16", "--model.init_args.hidden_size=8", "--data.batch_size=8"]


@pytest.fixture
def sst_dir(tmp_path):
    return write_treebank(tmp_path / "sst", {"train": 40, "dev": 12, "test": 12})


# fit in all four settings; test and predict each see both cells and both modes.
SETTINGS = [
    ("fit", "tree_lstm", "fine_grained"),
    ("fit", "tree_lstm", "binary"),
    ("fit", "recursive", "fine_grained"),
    ("fit", "recursive", "binary"),
    ("test", "tree_lstm", "fine_grained"),
    ("test", "recursive", "binary"),
    ("predict", "tree_lstm", "binary"),
    ("predict", "recursive", "fine_grained"),
]


@pytest.mark.parametrize(("subcommand", "cell", "mode"), SETTINGS)
def test_tree_lstm_fast_dev_run(cli, sst_dir, subcommand, cell, mode):
    run = cli(
        subcommand,
        "--config",
        config("tree_lstm"),
        f"--data.data_dir={sst_dir}",
        f"--data.mode={mode}",
        f"--model.cell={cell}",
        *SMALL,
        "--trainer.fast_dev_run=true",
    )
    assert run.trainer.state.finished
    # The data gave the model its sizes (the config names neither).
    assert run.model.hparams.num_classes == (5 if mode == "fine_grained" else 2)
    assert run.model.hparams.vocab_size == run.datamodule.vocab_size == len(run.datamodule.vocab)
    assert run.model.hparams.cell == cell and run.datamodule.mode == mode
    if subcommand == "test":
        assert 0 <= run.trainer.callback_metrics["test/acc"] <= 1


def test_checkpoint_keeps_its_vocabulary(cli, sst_dir, in_tmp):
    args = ["--config", config("tree_lstm"), f"--data.data_dir={sst_dir}", *SMALL]
    cli("fit", *args, "--trainer.max_epochs=1")
    runs = in_tmp / "lightning_logs" / "tree_lstm"
    assert (runs / "version_0" / "checkpoints" / "last.ckpt").is_file()
    with Image.open(runs / "version_0" / "figures" / "confusion_matrix.png") as figure:
        assert figure.size == (425, 425)  # the root confusion matrix of 5 classes, at 100 dpi
    cli("predict", *args, "--ckpt_path=last")
    before = torch.load(runs / "version_0" / "predict" / "predictions.pt")
    assert before.shape == (12, 5)
    torch.testing.assert_close(before.sum(dim=1), torch.ones(12))
    # The same words in another order give other ids when the vocabulary is rebuilt from train.txt;
    # the checkpoint's vocabulary keeps the ids the model learnt, so predictions do not change.
    train = sst_dir / "train.txt"
    train.write_text("".join(reversed(train.read_text(encoding="utf-8").splitlines(keepends=True))))
    saved = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["TreebankDataModule"]["vocab"] != TreebankDataModule(data_dir=str(sst_dir)).vocab
    cli("predict", *args, "--ckpt_path=last")
    torch.testing.assert_close(torch.load(runs / "version_0" / "predict" / "predictions.pt"), before)
    test = cli("test", *args, "--ckpt_path=best")
    assert 0 <= test.trainer.callback_metrics["test/acc"] <= 1


def test_test_without_test_file_is_one_line(sst_dir, in_tmp, capsys, monkeypatch):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    (sst_dir / "test.txt").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--config", config("tree_lstm"), f"--data.data_dir={sst_dir}", *SMALL, *QUIET])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: test.txt not found in data_dir={sst_dir}") and "\n" not in error
