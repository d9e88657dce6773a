"""configs/word2vec.yaml through the experiments command: fit, validate, test and predict on a corpus
made here, the vocabulary size linked from the data, what a run leaves behind, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from experiments.main import main
from tests.conftest import QUIET, config
from tests.text_data import write_topics_corpus

# A corpus of 21 words: every word in the vocabulary, no subsampling, small batches.
SMALL = ["--data.min_count=1", "--data.sample=0", "--data.batch_size=128", "--model.embedding_dim=16"]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_topics_corpus(tmp_path / "corpus" / "topics.txt")


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_fast_dev_run(cli, corpus, subcommand):
    run = cli(
        subcommand,
        "--config",
        config("word2vec"),
        f"--data.path={corpus}",
        *SMALL,
        "--trainer.fast_dev_run=true",
    )
    assert run.trainer.state.finished
    assert run.model.hparams.vocab_size == run.datamodule.vocab_size == 21  # linked, not configured


def test_fit_then_test_and_predict_from_the_checkpoint(cli, corpus, in_tmp):
    from gensim.models import KeyedVectors
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # On the CPU: the vectors are compared with the fitted model's, which the CPU loop trained.
    args = ["--config", config("word2vec"), f"--data.path={corpus}", *SMALL, "--trainer.accelerator=cpu"]
    probes = "--trainer.callbacks.init_args.probes=[sun,fish]"
    fit = cli("fit", *args, "--trainer.max_epochs=3", probes)
    run = in_tmp / "lightning_logs" / "word2vec" / "version_0"
    assert fit.trainer.global_step > 3 and (run / "checkpoints" / "last.ckpt").is_file()
    assert fit.trainer.callback_metrics["val/loss"] < fit.trainer.callback_metrics["train/loss"] + 1
    vectors = KeyedVectors.load_word2vec_format(str(run / "vectors.txt"))
    assert len(vectors) == 21 and vectors.vector_size == 16
    assert torch.allclose(torch.from_numpy(vectors.vectors), fit.model.embeddings(), atol=1e-5)
    neighbours = (run / "neighbours.txt").read_text(encoding="utf-8").splitlines()
    assert [line.split(":")[0] for line in neighbours] == ["sun", "fish"]
    events = EventAccumulator(str(run)).Reload()
    assert {"train/loss", "val/loss"} <= set(events.Tags()["scalars"])
    assert any(tag.startswith("embeddings/neighbours") for tag in events.Tags()["tensors"])
    assert (run / "projector_config.pbtxt").is_file()
    with Image.open(run / "figures" / "neighbours.png") as figure:  # 7 x 5 inches at 100 dpi
        assert figure.size == (700, 500)

    test = cli("test", *args, "--ckpt_path=best")
    assert 0 < test.trainer.callback_metrics["test/loss"] < 5
    cli("predict", *args, "--ckpt_path=last", probes)
    predicted = in_tmp / "lightning_logs" / "word2vec" / "version_0" / "predict"  # into the run it evaluates
    assert torch.equal(torch.load(predicted / "predictions.pt"), fit.model.embeddings())
    assert (predicted / "vectors.txt").read_text() == (run / "vectors.txt").read_text()
    assert (predicted / "figures" / "neighbours.png").is_file()


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p / "absent.txt", [], "corpus not found: path="),
        (lambda p: (p / "empty.txt").write_text("...\n") and p / "empty.txt", [], "holds no words"),
        (lambda p: write_topics_corpus(p / "t.txt"), ["--data.min_count=100000"], "leaves no word"),
    ],
)
def test_data_mistakes_are_one_line(in_tmp, capsys, monkeypatch, make, args, message):
    monkeypatch.delenv("EXPERIMENTS_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config("word2vec"), f"--data.path={make(in_tmp)}", *args, *QUIET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
