"""SkipGramModel: the tutorial's initialisation and loss, the compiled CPU loop against word2vec.c's, the
matrix form against autograd, the word2vec text format through gensim, nearest neighbours, and learning on a
corpus with two topics."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from torch import Tensor

from core.errors import ExperimentError
from core.threads import Workers
from datamodules import TextCorpusDataModule
from modules import SkipGramModel
from modules.skipgram_updates import compiled_loop
from tests.text_data import TOPICS, write_topics_corpus


def random_model(vocab_size: int = 20, dim: int = 8, seed: int = 0, cpu_loop: bool = True) -> SkipGramModel:
    torch.manual_seed(seed)
    model = SkipGramModel(vocab_size, dim, cpu_loop=cpu_loop)
    # Trained-looking weights: the tutorial's v starts at zero, which makes every score 0.
    torch.nn.init.normal_(model.u_embeddings.weight, std=0.3)
    torch.nn.init.normal_(model.v_embeddings.weight, std=0.3)
    return model


# Centers 1 and 3 occur twice, context 4 three times, noise word 9 four times, empty slots in rows 0
# and 2, and a row of width 3: the cases where summing updates matters.
BATCH = (
    torch.tensor([1, 2, 1, 3, 3]),
    torch.tensor([[4, 5, -1], [1, 1, 6], [4, -1, -1], [2, 7, 8], [4, 9, 9]]),
    torch.tensor([[5, 9], [9, 9], [2, 0], [1, 7], [0, 11]]),
)


def test_seed_initialisation():
    model = SkipGramModel(vocab_size=50, embedding_dim=10)
    u, v = model.u_embeddings, model.v_embeddings
    assert u.sparse and v.sparse and u.weight.shape == (50, 10)
    assert u.weight.abs().max() <= 0.5 / 10 and u.weight.std() > 0.01
    assert torch.equal(v.weight, torch.zeros(50, 10))


def test_forward_is_the_tutorials_loss_and_takes_a_single_pair():
    model = random_model()
    pos_u, pos_v, neg_v = torch.tensor([3]), torch.tensor([4]), torch.tensor([[5]])
    u, v = model.u_embeddings.weight, model.v_embeddings.weight
    expected = -(F.logsigmoid(u[3] @ v[4]) + F.logsigmoid(-(u[3] @ v[5])))
    assert torch.allclose(model(pos_u, pos_v, neg_v), expected)  # the tutorial's .squeeze() broke here


def test_pairs_are_the_batch_as_context_center_pairs():
    pos_u, pos_v, neg_v = SkipGramModel.pairs(BATCH)
    assert pos_u.tolist() == [4, 5, 1, 1, 6, 4, 2, 7, 8, 4, 9, 9]
    assert pos_v.tolist() == [1, 1, 2, 2, 2, 1, 3, 3, 3, 3, 3, 3]
    assert neg_v.tolist() == [[5, 9]] * 2 + [[9, 9]] * 3 + [[2, 0]] + [[1, 7]] * 3 + [[0, 11]] * 3


def test_matrix_form_is_the_autograd_sgd_step():
    closed, autograd = random_model(cpu_loop=False), random_model()
    loss, pairs = closed.closed_form_step(BATCH, lr=0.1)
    optimizer = torch.optim.SGD(autograd.parameters(), lr=0.1)
    reference = autograd(*autograd.pairs(BATCH))
    reference.backward()
    optimizer.step()
    assert pairs == 12 and torch.allclose(loss, reference)
    for name, value in closed.state_dict().items():
        assert torch.allclose(value, autograd.state_dict()[name], atol=1e-6), name
    assert not torch.equal(closed.v_embeddings.weight, random_model().v_embeddings.weight)


def test_rows_met_more_than_duplicate_cap_times_share_a_capped_update():
    # Context word 4 occurs 8 times, center 1 and noise words 2, 3 eight times each; with a cap of 2 each
    # occurrence gets a quarter of its update, so each of those rows moves by 2 occurrences' worth.
    batch = (torch.full((8,), 1), torch.full((8, 1), 4), torch.tensor([[2, 3]]).repeat(8, 1))
    capped, summed, single = (random_model(cpu_loop=False) for _ in range(3))
    capped.duplicate_cap, summed.duplicate_cap = 2, 0
    before = {k: v.clone() for k, v in capped.state_dict().items()}
    capped.closed_form_step(batch, lr=0.1)
    summed.closed_form_step(batch, lr=0.1)
    single.closed_form_step(tuple(t[:1] for t in batch), lr=0.1)
    for name in ("u_embeddings.weight", "v_embeddings.weight"):
        step = single.state_dict()[name] - before[name]
        assert torch.allclose(summed.state_dict()[name] - before[name], 8 * step, atol=1e-6)
        assert torch.allclose(capped.state_dict()[name] - before[name], 2 * step, atol=1e-6)


def word2vec_c(model: SkipGramModel, batch, lr: float) -> tuple[Tensor, Tensor, float, int]:
    """word2vec.c's skip-gram loop in float64, pair by pair: the reference for the compiled loop."""
    u = model.u_embeddings.weight.detach().double().clone()
    v = model.v_embeddings.weight.detach().double().clone()
    loss, pairs = 0.0, 0
    for center, contexts, noise in zip(*batch, strict=True):
        for a in contexts[contexts >= 0].tolist():
            pairs += 1
            neu1e = torch.zeros_like(u[a])
            for label, t in [(1, int(center))] + [(0, int(n)) for n in noise]:
                f = u[a] @ v[t]
                loss -= float(F.logsigmoid(f if label else -f))
                g = (label - torch.sigmoid(f)) * lr
                neu1e += g * v[t]
                v[t] += g * u[a]
            u[a] += neu1e
    return u, v, loss, pairs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_loop_is_word2vec_c_pair_by_pair(dtype):
    model = random_model().to(dtype)
    u, v, loss, pairs = word2vec_c(model, BATCH, lr=0.1)
    assert model.uses_loop()
    result, count = model.closed_form_step(BATCH, lr=0.1)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-12
    assert count == pairs == 12 and result.dtype == dtype
    assert result.item() == pytest.approx(loss, rel=tolerance)
    assert torch.allclose(model.u_embeddings.weight.double(), u, atol=tolerance, rtol=0)
    assert torch.allclose(model.v_embeddings.weight.double(), v, atol=tolerance, rtol=0)
    # Every step saw the last: the batch's repeated rows make that differ from the matrix form's sums.
    matrix = random_model(cpu_loop=False).to(dtype)
    matrix.closed_form_step(BATCH, lr=0.1)
    assert not torch.allclose(matrix.v_embeddings.weight, model.v_embeddings.weight, atol=1e-3)


def test_cpu_loop_loss_and_steps_stay_finite_for_saturated_scores():
    # Scores of ±72: exp(72) overflows float32, so the loop takes its large-score branch.
    model = random_model()
    batch = (torch.tensor([1]), torch.tensor([[4]]), torch.tensor([[5, 6]]))
    with torch.no_grad():
        model.u_embeddings.weight[4] = 3.0
        model.v_embeddings.weight[1] = -3.0  # center: f = -72, wrong by far
        model.v_embeddings.weight[5:7] = 3.0  # noise: f = 72, wrong by far
    u, v, loss, _ = word2vec_c(model, batch, lr=0.01)
    result, count = model.closed_form_step(batch, lr=0.01)
    assert count == 1 and loss == pytest.approx(3 * 72, rel=1e-6)
    assert result.item() == pytest.approx(loss, rel=1e-6)
    assert torch.allclose(model.u_embeddings.weight.double(), u, atol=1e-5)
    assert torch.allclose(model.v_embeddings.weight.double(), v, atol=1e-5)


def test_cpu_loop_and_matrix_form_agree_when_no_word_repeats():
    # One context per center and no word twice: no step sees another's result, so the two forms agree.
    batch = (torch.tensor([0, 1, 2]), torch.tensor([[3], [4], [5]]), torch.arange(6, 12).view(3, 2))
    loop, matrix = random_model(), random_model(cpu_loop=False)
    (loop_loss, loop_count), (matrix_loss, matrix_count) = (
        m.closed_form_step(batch, 0.1) for m in (loop, matrix)
    )
    assert loop_count == matrix_count == 3 and torch.allclose(loop_loss, matrix_loss)
    for name, value in loop.state_dict().items():
        assert torch.allclose(value, matrix.state_dict()[name], atol=1e-7), name


def fail_to_compile(*args, **kwargs):
    raise RuntimeError("LLVM ERROR: unsupported CPU")


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing", r"needs numba>=0\.60 \(.*\); fix: pip install"),
        ("compile", r"could not be compiled by numba \(RuntimeError: LLVM"),
    ],
)
def test_without_a_working_numba_the_cpu_update_is_the_matrix_form(monkeypatch, problem, message):
    compiled_loop.cache_clear()
    if problem == "missing":
        monkeypatch.setitem(sys.modules, "modules._word2vec_loop", None)  # its import now fails
    else:
        monkeypatch.delitem(sys.modules, "modules._word2vec_loop", raising=False)  # imported again
        monkeypatch.setattr("numba.njit", lambda *args, **kwargs: fail_to_compile)
    try:
        with pytest.warns(UserWarning, match=f"the word2vec CPU loop {message}.*using the matrix form"):
            model = random_model()
    finally:
        monkeypatch.undo()
        compiled_loop.cache_clear()
    assert model._loop is None and not model.uses_loop()
    matrix = random_model(cpu_loop=False)
    model.closed_form_step(BATCH, 0.1)
    matrix.closed_form_step(BATCH, 0.1)
    assert torch.equal(model.v_embeddings.weight, matrix.v_embeddings.weight)
    assert not random_model().to(torch.bfloat16).uses_loop()  # numba has no bfloat16: matrix form


def slices_of(batch, rows: int) -> list:
    return list(zip(*(t.split(rows) for t in batch), strict=True))


def test_one_background_thread_applies_the_slices_in_order():
    threaded, inline = random_model(), random_model()
    slices = slices_of(BATCH, 2) * 3  # rows repeat across slices: the order matters
    updates = Workers(threaded.closed_form_step, threads=1, depth=2, name="test-update")
    for rows in slices[:3]:
        updates.submit(rows, 0.1)
    for rows in slices[3:]:
        updates.submit(rows, 0.05)
    done = updates.drain()
    results = [inline.closed_form_step(rows, 0.1) for rows in slices[:3]]
    results += [inline.closed_form_step(rows, 0.05) for rows in slices[3:]]
    assert [c for _, c in done] == [c for _, c in results] and sum(c for _, c in done) == 36
    assert torch.allclose(torch.stack([x for x, _ in done]), torch.stack([x for x, _ in results]))
    for name, value in threaded.state_dict().items():
        assert torch.equal(value, inline.state_dict()[name]), name  # bit for bit
    assert updates.drain() == []
    updates.stop()
    assert not updates.is_alive()


def test_an_error_in_an_update_thread_is_raised_in_the_training_loop():
    def step(rows, lr):
        raise RuntimeError("shape mismatch in slice")

    updates = Workers(step, threads=2, depth=1, name="test-update")
    # At the next submit, or at the drain that waits for the slices.
    with pytest.raises(RuntimeError, match="shape mismatch in slice"):
        for rows in slices_of(BATCH, 1):
            updates.submit(rows, 0.1)
        updates.drain()
    updates.stop()


def test_a_checkpoint_holds_every_queued_update():
    threaded, inline = random_model(), random_model()
    threaded._updates = Workers(threaded.closed_form_step, threads=1, depth=1, name="test-update")
    for rows in slices_of(BATCH, 1):
        threaded._updates.submit(rows, 0.1)
    threaded.on_save_checkpoint({})  # Lightning calls it before writing the state_dict's tensors
    for rows in slices_of(BATCH, 1):
        inline.closed_form_step(rows, 0.1)
    assert torch.equal(threaded.u_embeddings.weight, inline.u_embeddings.weight)
    assert threaded.train_loss.update_count == 1  # the drained loss went into train/loss
    threaded.teardown("fit")
    assert threaded._updates is None


def test_save_embedding_round_trips_through_gensim(tmp_path):
    from gensim.models import KeyedVectors

    model = random_model(vocab_size=4, dim=5)
    words = ["the", "king's", "queen", "x1"]
    model.save_embedding(words, tmp_path / "vectors.txt")
    lines = (tmp_path / "vectors.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "4 5" and len(lines) == 5 and lines[2].startswith("king's ")
    loaded = KeyedVectors.load_word2vec_format(str(tmp_path / "vectors.txt"), binary=False)
    assert loaded.index_to_key == words
    assert torch.allclose(torch.from_numpy(loaded.vectors), model.embeddings(), atol=1e-5)
    # The tutorial's id2word dict works too.
    model.save_embedding(dict(enumerate(words)), tmp_path / "from_dict.txt")
    assert (tmp_path / "from_dict.txt").read_text(encoding="utf-8") == "\n".join(lines) + "\n"


def test_nearest_neighbours_exclude_the_word_itself():
    model = SkipGramModel(4, 2)
    with torch.no_grad():
        model.u_embeddings.weight.copy_(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, -0.1]]))
    similarity, ids = model.nearest(torch.tensor([0, 2]), k=2)
    assert ids.tolist() == [[1, 2], [1, 0]]
    assert similarity[0, 0] > similarity[0, 1] and similarity[0, 0] == pytest.approx(0.9 / 0.9055, abs=1e-3)


def test_invalid_sizes_are_one_line_errors():
    with pytest.raises(
        ExperimentError, match="vocab_size, embedding_dim, update_rows and workers must be at"
    ):
        SkipGramModel(0)


def fit(
    tmp_path,
    epochs: int,
    *,
    lines: int = 400,
    data_args: dict | None = None,
    callbacks: tuple = (),
    **model_args,
) -> tuple[SkipGramModel, TextCorpusDataModule, Trainer]:
    """Fit on the two-topic corpus of ``lines`` lines; ``data_args`` override the datamodule's settings."""
    torch.manual_seed(0)
    settings = {"min_count": 1, "sample": 0, "batch_size": 256, "prefetch_batches": 0}
    settings |= {"val_fraction": 0.1, "test_fraction": 0}
    dm = TextCorpusDataModule(
        path=str(write_topics_corpus(tmp_path / "topics.txt", lines=lines)), **(settings | (data_args or {}))
    )
    model = SkipGramModel(dm.vocab_size, embedding_dim=16, **model_args)
    trainer = Trainer(
        max_epochs=epochs,
        # The CPU's update paths (the compiled loop, the threads) are what these tests check.
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    trainer.fit(model, dm)
    return model, dm, trainer


def topic_neighbours(model: SkipGramModel, dm: TextCorpusDataModule) -> float:
    """Share of each topic word's 3 nearest neighbours that belong to its topic."""
    index = {w: i for i, w in enumerate(dm.words)}
    hits = []
    for topic in TOPICS:
        _, near = model.nearest(torch.tensor([index[w] for w in topic]), k=3)
        hits += [dm.words[j] in topic for row in near.tolist() for j in row]
    return sum(hits) / len(hits)


def test_training_lowers_the_held_out_loss_and_groups_the_topics(tmp_path):
    untrained, dm, trainer = fit(tmp_path, epochs=0)
    trainer.validate(untrained, dm, verbose=False)
    before = trainer.callback_metrics["val/loss"].item()
    model, dm, trainer = fit(tmp_path, epochs=8)
    after = trainer.callback_metrics["val/loss"].item()
    assert after < before - 0.5
    assert topic_neighbours(model, dm) > 0.9
    # The learning rate fell linearly from 0.025 to min_lr over the run.
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0001, abs=2e-3)


def test_a_subsampled_corpus_trains_every_batch_and_validates_every_epoch(tmp_path):
    # With subsampling each epoch draws its own number of batches: all of them train, validation runs
    # at every epoch's end, and the learning rate still ends near min_lr.
    class Count(Callback):
        def __init__(self) -> None:
            self.batches, self.validations = [], 0

        def on_train_epoch_start(self, trainer, pl_module):
            self.batches.append(0)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batches[-1] += 1

        def on_validation_epoch_end(self, trainer, pl_module):
            self.validations += not trainer.sanity_checking

    count = Count()
    data_args = {"sample": 1e-2, "batch_size": 64, "prefetch_batches": 8}
    _, dm, trainer = fit(tmp_path, 3, lines=2000, data_args=data_args, callbacks=(count,), workers=2)
    loader = dm._batches("train")
    assert count.batches == [sum(1 for _ in loader.batches(epoch)) for epoch in range(3)]
    assert count.validations == 3 and "val/loss" in trainer.callback_metrics
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0001, abs=2e-3)


def test_each_slice_of_a_batch_gets_its_own_learning_rate(tmp_path):
    # A 256-center batch in 64-row slices: the schedule steps by a quarter batch per slice.
    class Rates(Callback):
        def __init__(self) -> None:
            self.rates: dict[int, list[float]] = {}  # by batch (global step, counted before the submits)

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch:  # the update threads (and this wrapper) last the whole run
                return
            submit = pl_module._updates.submit

            def record(rows, rate):
                self.rates.setdefault(pl_module.global_step - 1, []).append(rate)
                submit(rows, rate)

            pl_module._updates.submit = record

    rates = Rates()
    model, _, trainer = fit(tmp_path, epochs=2, callbacks=(rates,), update_rows=64)
    step = (0.025 - 0.0001) / model._total_steps  # the rate's fall per batch
    assert sorted(rates.rates) == list(range(trainer.global_step))
    for batch, per_slice in rates.rates.items():
        expected = [0.025 - step * (batch + i / len(per_slice)) for i in range(len(per_slice))]
        assert per_slice == pytest.approx(expected, abs=1e-9)
    assert {len(r) for r in rates.rates.values()} >= {4}


@pytest.mark.parametrize("cpu_loop", [True, False], ids=["loop", "matrix"])
def test_hogwild_threads_learn_as_well(tmp_path, cpu_loop):
    model, dm, trainer = fit(tmp_path, epochs=8, workers=2, update_rows=32, cpu_loop=cpu_loop)
    assert trainer.callback_metrics["val/loss"].item() < 3.0
    assert topic_neighbours(model, dm) > 0.9
    assert model._updates is None  # the threads are stopped when training ends


def test_autograd_path_with_sparse_adam_learns_too(tmp_path):
    model, dm, trainer = fit(
        tmp_path,
        epochs=8,
        closed_form=False,
        optimizer=lambda params: torch.optim.SparseAdam(list(params), lr=0.02),
    )
    assert trainer.callback_metrics["val/loss"].item() < 3.0  # untrained: 6 log 2 = 4.16 per pair
    assert topic_neighbours(model, dm) > 0.8


CRASH = """
import sys
sys.path.insert(0, {repo!r})
from lightning.pytorch import Callback, Trainer
from datamodules import TextCorpusDataModule
from modules import SkipGramModel
from tests.text_data import write_topics_corpus

class Boom(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 3:
            raise RuntimeError("boom at batch 3")

path = write_topics_corpus(__import__("pathlib").Path({folder!r}) / "topics.txt", lines=12000)
dm = TextCorpusDataModule(path=str(path), min_count=1, batch_size=1024, val_fraction=0, test_fraction=0)
model = SkipGramModel(dm.vocab_size, workers=2, update_rows=16)
trainer = Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                  callbacks=[Boom()])
trainer.fit(model, dm)
"""


@pytest.mark.slow  # the longest test of its folder: left out of make test-fast
def test_an_error_mid_training_exits_with_its_traceback_not_an_abort(tmp_path):
    # Updates were still queued and the next batches being made when the error ended the run; daemon
    # threads cut off inside torch operations at exit abort the process ("terminate called without an
    # active exception", status 134) unless they are stopped first.
    repo = str(Path(__file__).resolve().parents[2])
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASH.format(repo=repo, folder=str(tmp_path))), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "RuntimeError: boom at batch 3" in result.stderr
    assert "terminate called" not in result.stderr
