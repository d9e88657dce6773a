"""TreeLSTM (both cells): the level-batched forward against a node-by-node recursion over each tree,
learning a tiny treebank, predictions, the loss over counted nodes, pretrained word vectors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from core.errors import ExperimentError
from datamodules import TreebankDataModule
from datamodules.treebank import IGNORE, EncodedTrees, parse_trees
from modules import TreeLSTM, WordVectorsError
from modules.tree_lstm import RootConfusionMatrix, read_word_vectors
from tests.conftest import EpochHistory
from tests.tree_data import NBSP, treebank_lines, write_treebank

CELLS = ["tree_lstm", "recursive"]


def small_model(cell: str, vocab_size: int = 20, num_classes: int = 5, **kwargs) -> TreeLSTM:
    torch.manual_seed(0)
    kwargs = {"embedding_dim": 8, "hidden_size": 6, **kwargs}
    return TreeLSTM(vocab_size, num_classes, cell=cell, **kwargs)


def node_state(model: TreeLSTM, bank, first: int, node: int, word_ids: dict, states: dict) -> torch.Tensor:
    """The state of ``node`` (an index within the tree starting at ``first``), from its children's."""
    i = first + node
    if bank.left[i] < 0:
        states[node] = model.cell.leaf(model.embedding(torch.tensor([word_ids.get(bank.words[i], 0)])))
    else:
        left = node_state(model, bank, first, bank.left[i], word_ids, states)
        right = node_state(model, bank, first, bank.right[i], word_ids, states)
        states[node] = model.cell.compose(left, right)
    return states[node]


def reference_logits(model: TreeLSTM, bank, trees: list[int], word_ids: dict[str, int]) -> list[torch.Tensor]:
    """Node by node, recursively, one tree at a time: each tree's logits in its own post-order."""
    per_tree = []
    for tree in trees:
        first, n = bank.offsets[tree], bank.offsets[tree + 1] - bank.offsets[tree]
        states: dict[int, torch.Tensor] = {}
        node_state(model, bank, first, n - 1, word_ids, states)  # from the root, the last node
        hidden = torch.cat([model.cell.hidden(states[k]) for k in range(n)])
        per_tree.append(model.classifier(hidden))
    return per_tree


@pytest.mark.parametrize("cell", CELLS)
def test_level_batched_forward_equals_node_by_node_recursion(cell):
    lines = [*treebank_lines(9, seed=3, max_words=12), "(2 alone)"]  # a one-word tree too
    bank = parse_trees(lines)
    word_ids = {w: i for i, w in enumerate(["<unk>", *sorted({w for w in bank.words if w})])}
    model = small_model(cell, vocab_size=len(word_ids)).double().eval()
    trees = [4, 0, 9, 7, 2]
    batch = EncodedTrees(bank, word_ids, binary=False).batch(torch.tensor(trees))
    assert len(batch.level_sizes) > 5  # deep enough for the level loop to matter
    batched = model(batch)
    expected = reference_logits(model, bank, trees, word_ids)
    # The batch's nodes are sorted by height; match each tree's post-order nodes by walking from its root.
    leaves = batch.level_sizes[0]

    def post_order(node: int) -> list[int]:
        if node < leaves:
            return [node]
        children = int(batch.left[node - leaves]), int(batch.right[node - leaves])
        return [*post_order(children[0]), *post_order(children[1]), node]

    for root, logits in zip(batch.roots.tolist(), expected, strict=True):
        torch.testing.assert_close(batched[post_order(root)], logits, rtol=0, atol=1e-6)
    # The gradients through the in-place level buffer are those of the recursion too.
    weights = torch.randn_like(batched)
    grads = torch.autograd.grad((batched * weights).sum(), list(model.parameters()))
    order = torch.cat([torch.tensor(post_order(r)) for r in batch.roots.tolist()])
    reference = (torch.cat(expected) * weights[order]).sum()
    for got, want in zip(grads, torch.autograd.grad(reference, list(model.parameters())), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_loss_falls_on_a_tiny_treebank(tmp_path, cell):
    data = write_treebank(tmp_path, {"train": 32, "dev": 8}, max_words=5)
    dm = TreebankDataModule(data_dir=str(data), batch_size=8)
    model = small_model(
        cell,
        vocab_size=dm.vocab_size,
        embedding_dim=16,
        hidden_size=16,
        dropout=0.0,
        optimizer=lambda params: torch.optim.Adagrad(params, lr=0.1),
    )
    history = EpochHistory("train/loss")
    trainer = Trainer(
        max_epochs=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history],
    )
    trainer.fit(model, datamodule=dm)
    losses = history.values
    assert losses[-1] < 0.5 * losses[0], losses
    assert trainer.callback_metrics["train/node_acc"] > 0.8
    assert 0 <= trainer.callback_metrics["val/acc"] <= 1 and "val/acc_best" in trainer.callback_metrics


def test_loss_counts_only_labelled_nodes_and_predict_gives_root_probabilities():
    bank = parse_trees(["(3 (2 the) (4 good))", "(0 (1 dull) (0 (2 the) (0 bad)))"])
    word_ids = {"<unk>": 0, "the": 1, "good": 2, "dull": 3, "bad": 4}
    batch = EncodedTrees(bank, word_ids, binary=True).batch(torch.tensor([0, 1]))
    model = small_model("tree_lstm", vocab_size=5, num_classes=2).eval()
    logits = model(batch)
    counted = batch.labels != IGNORE
    assert int(counted.sum()) == 6  # of 8 nodes: the two neutral leaves "the" do not count
    expected = F.cross_entropy(logits[counted], batch.labels[counted], reduction="sum") / 2
    torch.testing.assert_close(model._step(batch, "val")[0], expected)
    # validation_step returns the root logits, for RootConfusionMatrix.
    torch.testing.assert_close(model.validation_step(batch, 0), logits[batch.roots])
    probabilities = model.predict_step(batch, 0)
    assert probabilities.shape == (2, 2)
    torch.testing.assert_close(probabilities, logits[batch.roots].softmax(dim=1))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2))


def test_root_confusion_matrix_counts_the_sentences_roots_with_the_datas_class_names(tmp_path):
    # Roots labelled 3 (positive) and 0 (very negative); logits predict 3 and 1.
    bank = parse_trees(["(3 (2 the) (4 good))", "(0 (1 dull) (0 (2 the) (0 bad)))"])
    batch = EncodedTrees(bank, {"<unk>": 0}, binary=False).batch(torch.tensor([0, 1]))
    trainer = SimpleNamespace(
        sanity_checking=False, fast_dev_run=False, loggers=[TensorBoardLogger(tmp_path)], is_global_zero=True
    )
    callback = RootConfusionMatrix()
    roots = torch.eye(5)[[3, 1]] * 5
    callback.on_validation_batch_end(trainer, SimpleNamespace(device=torch.device("cpu")), roots, batch, 0)
    counts = callback.metric.compute()
    assert counts.sum() == 2 and counts[3, 3] == 1 and counts[0, 1] == 1  # row: true root, column: predicted
    assert callback.samples == "sentences"
    names = TreebankDataModule(data_dir=str(tmp_path)).classes
    assert names == ["very negative", "negative", "neutral", "positive", "very positive"]
    assert TreebankDataModule(data_dir=str(tmp_path), mode="binary").classes == ["negative", "positive"]


def write_vectors(path, rows: dict[str, list[float]], header: bool) -> None:
    lines = [f"{len(rows)} {len(next(iter(rows.values())))}"] if header else []
    # word2vec's C tool ends each line with a space
    ending = " " if header else ""
    lines += [" ".join([word, *(str(v) for v in vector)]) + ending for word, vector in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("header", [True, False], ids=["word2vec", "glove"])
def test_reads_word2vec_and_glove_text_formats(tmp_path, header):
    path = tmp_path / "vectors.txt"
    rows = {
        "good": [1.0, 2.0, 3.0],
        "movie": [-1.0, 0.5, 0.25],
        f"8{NBSP}1\\/2": [0.0, 0.0, 7.0],
        ". . .": [4.0, 4.0, 4.0],  # GloVe 840B has tokens holding spaces
    }
    write_vectors(path, rows, header)
    words = ["<unk>", "good", "Movie", f"8{NBSP}1\\/2", "absent", ". . ."]
    vectors, found = read_word_vectors(path, words, dim=3)
    assert found.tolist() == [False, True, True, True, False, True]
    assert vectors[1].tolist() == [1.0, 2.0, 3.0]
    assert vectors[2].tolist() == [-1.0, 0.5, 0.25]  # found lower-cased
    assert vectors[3].tolist() == [0.0, 0.0, 7.0] and vectors[5].tolist() == [4.0, 4.0, 4.0]
    assert not vectors[4].any()


def test_word_vector_file_errors(tmp_path):
    path = tmp_path / "vectors.txt"
    write_vectors(path, {"good": [1.0, 2.0]}, header=True)
    with pytest.raises(WordVectorsError, match=r"2-dimensional vectors; set --model\.embedding_dim 2"):
        read_word_vectors(path, ["good"], dim=3)
    write_vectors(path, {"good": [1.0, 2.0]}, header=False)
    with pytest.raises(WordVectorsError, match="line 1: 2 values, expected a word and 3"):
        read_word_vectors(path, ["good"], dim=3)
    path.write_text("good 1.0 x 2.0\n", encoding="utf-8")
    with pytest.raises(WordVectorsError, match="line 1: a value is not a number"):
        read_word_vectors(path, ["good"], dim=3)
    with pytest.raises(WordVectorsError, match="word-vector file not found"):
        read_word_vectors(tmp_path / "none.txt", ["good"], dim=3)


@pytest.mark.parametrize("header", [True, False], ids=["word2vec", "glove"])
def test_fit_starts_from_pretrained_vectors(tmp_path, header):
    data = write_treebank(tmp_path / "sst", {"train": 10, "dev": 4})
    dm = TreebankDataModule(data_dir=str(data))
    vectors = tmp_path / "vectors.txt"
    write_vectors(vectors, {"good": [0.5] * 8, "awful": [-0.5] * 8, "unused": [9.0] * 8}, header)
    model = small_model("recursive", vocab_size=dm.vocab_size, pretrained_vectors=str(vectors))
    before = model.embedding.weight.detach().clone()
    Trainer(max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False).fit(
        model, datamodule=dm
    )
    weight = model.embedding.weight.detach()
    good, awful = dm.vocab.index("good"), dm.vocab.index("awful")
    assert weight[good].tolist() == [0.5] * 8 and weight[awful].tolist() == [-0.5] * 8
    others = [i for i in range(dm.vocab_size) if i not in (good, awful)]
    assert torch.equal(weight[others], before[others])
    write_vectors(vectors, {"zzz": [1.0] * 8}, header)
    with pytest.raises(WordVectorsError, match="none of the vocabulary's words"):
        model = small_model("recursive", vocab_size=dm.vocab_size, pretrained_vectors=str(vectors))
        model.load_vectors(dm.vocab)


def test_frozen_embedding_and_parameter_groups():
    model = small_model("tree_lstm", freeze_embeddings=True, optimizer=torch.optim.Adagrad)
    optimizer = model.configure_optimizers()
    assert len(optimizer.param_groups) == 1
    assert all(p is not model.embedding.weight for p in optimizer.param_groups[0]["params"])
    model = small_model(
        "tree_lstm", optimizer=lambda params: torch.optim.Adagrad(params, lr=0.05, weight_decay=1e-4)
    )
    groups = model.configure_optimizers().param_groups
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert groups[1]["params"] == [model.embedding.weight]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="cell must be one of tree_lstm, recursive"):
        TreeLSTM(10, cell="rntn")  # type: ignore[arg-type]
    with pytest.raises(
        ExperimentError, match=r"--model\.sparse_gradients true needs --model\.embedding_weight_decay 0"
    ):
        TreeLSTM(10, sparse_gradients=True, embedding_weight_decay=1e-4)
    with pytest.raises(
        ExperimentError, match=r"^--model\.num_classes 1: a classifier tells at least 2 classes apart"
    ):
        TreeLSTM(10, num_classes=1)


@pytest.mark.parametrize(("backend", "sparse"), [("nccl", False), ("gloo", True)])
def test_sparse_gradients_turn_dense_only_under_nccl(monkeypatch, backend, sparse):
    # NCCL all-reduces dense tensors only; DDP reads each embedding's `sparse` when it wraps the module,
    # which is after setup. No NCCL here: the process group is stood in for.
    from modules import tree_lstm

    monkeypatch.setattr(tree_lstm.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(tree_lstm.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(tree_lstm.dist, "get_backend", lambda: backend)
    model = TreeLSTM(vocab_size=10, embedding_dim=4, hidden_size=3, sparse_gradients=True)
    if sparse:
        model.setup("fit")
    else:
        with pytest.warns(UserWarning, match="NCCL all-reduces dense gradients only"):
            model.setup("fit")
    assert model.embedding.sparse is sparse
