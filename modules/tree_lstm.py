"""The 递归神经网络 (trees) chapter: a network applied over a parse tree, one shared set of weights
composing each node from its children, nodes in topological order, trained by reverse-mode autodiff.

Run:
    python -m experiments fit --config configs/tree_lstm.yaml --data.data_dir <folder with the SST trees>
    python -m experiments fit --config configs/tree_lstm.yaml --model.cell recursive --data.mode binary

Two compositions, chosen by ``cell`` (the rest of the module is shared, hence one class):
- ``tree_lstm``: the binary constituency Tree-LSTM of Tai, Socher and Manning (2015). A leaf is
  ``c = W_c x``, ``h = sigmoid(W_o x) * tanh(c)``; an inner node gates its children's memories with an input
  gate, one forget gate per child and an output gate, all from ``[h_left; h_right]``.
- ``recursive``: the plain recursive network of the chapter (Socher et al. 2011): a leaf is
  ``h = tanh(W_x x + b)``, an inner node ``h = tanh(W [h_left; h_right] + b)``.

Every node's ``h`` goes through dropout and a linear layer to sentiment logits; the loss is the
cross-entropy summed over a tree's counted nodes, averaged over trees (Tai et al.'s objective). The
``RootConfusionMatrix`` callback draws the sentences' true against predicted sentiment after each
validation.

The batch comes from ``datamodules.treebank``: nodes sorted by height, so each level of all the batch's
trees is one batched composition; the chapter's "nodes traversed in topological order" becomes "levels
in order", and the Python loop runs over a batch's height (at most ~30 on SST), not over its nodes.

Departures from the tutorial: the chapter has prose and a picture but no code. What it describes (shared
weights over a tree, topological order, reverse-mode autodiff; the RNTN's per-node classifiers) is
implemented as above; its RNTN (a tensor composition) is left out, the Tree-LSTM that superseded it on
the same data is here instead. The plain recursive net projects the 300-dim word vector to the hidden
size at the leaves (Socher's uses the word vector itself, which ties the two sizes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from core.domains import FilePath, Fraction, NonNegativeFloat, PositiveInt
from core.errors import ExperimentError
from core.metrics import EpochMean
from core.optim import OptimizerCallable, build_optimizer
from modules.classifier import PhaseAccuracy, check_num_classes
from modules.visualize import ConfusionMatrix

#: the label of nodes that do not count (the datamodule's neutral nodes in binary mode)
IGNORE = -1


class WordVectorsError(ExperimentError, ValueError):
    """A pretrained word-vector file that is absent, malformed or does not fit the model."""


class TreeLSTMCell(nn.Module):
    """Binary Tree-LSTM composition (Tai et al. 2015, section 3.2). A node's state is ``[c; h]``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.state_size = 2 * hidden_size
        self.leaf_c = nn.Linear(input_size, hidden_size)
        self.leaf_o = nn.Linear(input_size, hidden_size)
        # input gate, left and right forget gates, output gate, update: one matrix multiply per level
        self.gates = nn.Linear(2 * hidden_size, 5 * hidden_size)

    def leaf(self, x: Tensor) -> Tensor:
        c = self.leaf_c(x)
        h = torch.sigmoid(self.leaf_o(x)) * torch.tanh(c)
        return torch.cat([c, h], dim=1)

    def compose(self, left: Tensor, right: Tensor) -> Tensor:
        n = self.hidden_size
        gates = self.gates(torch.cat([left[:, n:], right[:, n:]], dim=1))
        i, f_left, f_right, o = torch.sigmoid(gates[:, : 4 * n]).chunk(4, dim=1)
        u = torch.tanh(gates[:, 4 * n :])
        c = i * u + f_left * left[:, :n] + f_right * right[:, :n]
        return torch.cat([c, o * torch.tanh(c)], dim=1)

    def hidden(self, state: Tensor) -> Tensor:
        return state[:, self.hidden_size :]


class RecursiveCell(nn.Module):
    """The plain recursive network's composition: ``h = tanh(W [h_left; h_right] + b)``; state is ``h``."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.state_size = hidden_size
        self.leaf_proj = nn.Linear(input_size, hidden_size)
        self.combine = nn.Linear(2 * hidden_size, hidden_size)

    def leaf(self, x: Tensor) -> Tensor:
        return torch.tanh(self.leaf_proj(x))

    def compose(self, left: Tensor, right: Tensor) -> Tensor:
        return torch.tanh(self.combine(torch.cat([left, right], dim=1)))

    def hidden(self, state: Tensor) -> Tensor:
        return state


CELLS = {"tree_lstm": TreeLSTMCell, "recursive": RecursiveCell}


def read_word_vectors(path: str | Path, words: list[str], dim: int) -> tuple[Tensor, Tensor]:
    """Vectors for ``words`` from a text file in word2vec format (a ``count dim`` header line) or GloVe's
    (no header), one ``word v1 ... v_dim`` a line, fields separated by ASCII spaces.

    A word missing from the file is looked up lower-cased (GloVe's 6B vectors are lower-case). Returns
    ``(vectors (len(words), dim), found (len(words),) bool)``; rows not found are zero.
    """
    path = Path(path)
    if not path.is_file():
        raise WordVectorsError(f"word-vector file not found: {path} (--model.pretrained_vectors)")
    wanted = set(words) | {w.lower() for w in words}
    found: dict[str, Tensor] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            # word2vec's C tool ends lines with a space; GloVe's 840B has words holding spaces, so the
            # word is whatever precedes the last `dim` fields.
            fields = line.rstrip("\r\n").rstrip(" ").split(" ")
            if number == 1 and len(fields) == 2 and all(f.isdigit() for f in fields):
                if int(fields[1]) != dim:
                    raise WordVectorsError(
                        f"{path} holds {fields[1]}-dimensional vectors; set --model.embedding_dim {fields[1]}"
                    )
                continue
            if len(fields) == 1 and not fields[0]:
                continue
            if len(fields) < dim + 1:
                raise WordVectorsError(
                    f"{path}, line {number}: {len(fields) - 1} values, expected a word and {dim} "
                    f"(--model.embedding_dim must equal the vectors' size)"
                )
            word = " ".join(fields[:-dim])
            if word in wanted and word not in found:
                try:
                    found[word] = torch.tensor([float(v) for v in fields[-dim:]])
                except ValueError:
                    raise WordVectorsError(f"{path}, line {number}: a value is not a number") from None
    vectors = torch.zeros(len(words), dim)
    hit = torch.zeros(len(words), dtype=torch.bool)
    for i, word in enumerate(words):
        vector = found.get(word, found.get(word.lower()))
        if vector is not None:
            vectors[i], hit[i] = vector, True
    return vectors, hit


def nccl_data_parallel() -> bool:
    """Whether this process is one of several joined by NCCL (data-parallel on GPUs)."""
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size() > 1 and dist.get_backend() == "nccl"


class TreeLSTM(PhaseAccuracy):
    """Sentiment of every node of binary parse trees; ``predict`` returns each tree's root class
    probabilities. Logs ``{train,val,test}/loss``, ``/acc`` (root accuracy, the figure the papers report),
    ``/node_acc`` (all counted nodes) once per epoch, and ``val/acc_best``.

    Args:
        vocab_size: Rows of the word embedding (a count >= 1: the datamodule's vocabulary; id 0 is
            unknown).
        num_classes: 5 (fine-grained) or 2 (binary): a count >= 2.
        cell: ``tree_lstm`` (Tai et al.) or ``recursive`` (the plain recursive network).
        embedding_dim: Size of a word vector (a count >= 1).
        hidden_size: Size of a node's hidden state (a count >= 1; Tai et al.'s memory dimension).
        dropout: Dropout on the word vectors and on each node's hidden state before the classifier, in
            [0, 1).
        pretrained_vectors: Optional word2vec- or GloVe-format text file (a file, not a folder); the
            vocabulary's words found in it start from its vectors (read at ``fit``; a checkpoint holds the
            trained ones).
        freeze_embeddings: Keep the word vectors fixed.
        embedding_weight_decay: Weight decay of the word vectors (a finite number >= 0), overriding the
            optimizer's: Tai et al.
            regularise the composition and classifier only. With Adagrad a decay on a row that gets no
            other gradient is scaled up to a full step, so a rare word's vector would be driven to zero.
        sparse_gradients: Sparse embedding gradients (only the batch's rows); Adagrad and SGD take them,
            Adam does not. Needs ``embedding_weight_decay: 0``.
        optimizer: Builds the optimizer from the parameter groups.
    """

    phase_metrics = ("loss", "acc", "node_acc")
    #: Why ``python -m experiments export`` refuses it, and what it offers instead.
    export_unsupported = (
        "its structure varies per input (each sentence's parse tree decides the order of the cell's "
        "calls), so there is no fixed graph to export; use predict on the checkpoint (root class "
        "probabilities per tree)"
    )
    #: Arguments that make the model small enough for tests' few steps (docs/architecture.md).
    small_args: ClassVar[dict[str, Any]] = {"embedding_dim": 16, "hidden_size": 8}
    #: Without dropout a fit is deterministic: two processes compute what one does (docs/architecture.md).
    deterministic_args: ClassVar[dict[str, Any] | None] = {"dropout": 0.0}

    def __init__(
        self,
        vocab_size: PositiveInt,
        num_classes: PositiveInt = 5,
        cell: Literal["tree_lstm", "recursive"] = "tree_lstm",
        embedding_dim: PositiveInt = 300,
        hidden_size: PositiveInt = 150,
        dropout: Fraction = 0.5,
        pretrained_vectors: FilePath | None = None,
        freeze_embeddings: bool = False,
        embedding_weight_decay: NonNegativeFloat = 0.0,
        sparse_gradients: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adagrad,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if vocab_size < 1:
            raise ValueError(f"need vocab_size >= 1, got {vocab_size}")
        check_num_classes(num_classes)
        if sparse_gradients and embedding_weight_decay:
            raise ExperimentError(
                "--model.sparse_gradients true needs --model.embedding_weight_decay 0 (torch optimizers "
                "reject both): set one of them off"
            )
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = optimizer
        self.pretrained_vectors = pretrained_vectors
        self.embedding = nn.Embedding(vocab_size, embedding_dim, sparse=sparse_gradients)
        if sparse_gradients:
            # Why --compile.enabled refuses it (experiments/compile.py): inductor has no sparse tensors.
            self.compile_unsupported = (
                "torch.compile does not take sparse embedding gradients; set --model.sparse_gradients false"
            )
        # Tai et al.'s code starts words without a pretrained vector at U(-0.05, 0.05); from scratch on SST
        # that reaches 45% dev root accuracy after one epoch where nn.Embedding's N(0, 1) reaches 37%.
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        self.embedding.weight.requires_grad_(not freeze_embeddings)
        self.cell = CELLS[cell](embedding_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_classes)
        for phase in ("train", "val", "test"):
            setattr(self, f"{phase}_loss", EpochMean())
            setattr(self, f"{phase}_acc", MulticlassAccuracy(num_classes, average="micro"))
            node_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)
            setattr(self, f"{phase}_node_acc", node_acc)
        self.val_acc_best = MaxMetric()

    # --- the network ----------------------------------------------------------------------------------
    def forward(self, batch: Any) -> Tensor:
        """Logits ``(nodes, num_classes)`` of every node of a batch of trees, in the batch's node order.

        ``batch`` is a ``datamodules.treebank.TreeBatch``: nodes sorted by height, ``level_sizes`` nodes
        per height, ``words`` of the leaves (the first ``level_sizes[0]`` nodes), ``left``/``right``
        children of the others.
        """
        words, left, right, level_sizes = batch.words, batch.left, batch.right, batch.level_sizes
        leaves = level_sizes[0]
        x = self.dropout(self.embedding(words))
        leaf_states = self.cell.leaf(x)
        states = leaf_states.new_empty(sum(level_sizes), leaf_states.shape[1])
        states[:leaves] = leaf_states
        # One gather per level fetches both children: [left, right] pairs, interleaved.
        children = torch.stack([left, right], dim=1).flatten()
        # Children sit at lower heights, so each level's inputs are ready when it is computed. Writing the
        # level into `states` in place is safe for autograd: index_select keeps only its indices.
        start = leaves
        for size in level_sizes[1:]:
            inner = start - leaves
            pairs = states.index_select(0, children[2 * inner : 2 * (inner + size)]).view(size, 2, -1)
            states[start : start + size] = self.cell.compose(pairs[:, 0], pairs[:, 1])
            start += size
        return self.classifier(self.dropout(self.cell.hidden(states)))

    def load_vectors(self, words: list[str]) -> int:
        """Copy the pretrained vectors of ``words`` (the vocabulary, by id) into the embedding."""
        assert self.pretrained_vectors is not None
        if len(words) != self.embedding.num_embeddings:
            raise WordVectorsError(
                f"the vocabulary has {len(words)} words but vocab_size is {self.embedding.num_embeddings}"
            )
        vectors, found = read_word_vectors(self.pretrained_vectors, words, self.embedding.embedding_dim)
        if not found.any():
            raise WordVectorsError(f"none of the vocabulary's words is in {self.pretrained_vectors}")
        with torch.no_grad():
            self.embedding.weight[found] = vectors[found].to(self.embedding.weight)
        rank_zero_info(f"{int(found.sum())} of {len(words)} words start from {self.pretrained_vectors}")
        return int(found.sum())

    def setup(self, stage: str) -> None:
        # Runs before DDP wraps the module, which reads each embedding's `sparse` then: NCCL all-reduces
        # dense tensors only (gloo, on CPUs, takes sparse ones).
        if self.embedding.sparse and nccl_data_parallel():
            self.embedding.sparse = False
            rank_zero_warn("sparse_gradients is off for this run: NCCL all-reduces dense gradients only")
        # Only fit starts from the file; test and predict restore the trained vectors from a checkpoint.
        if stage == "fit" and self.pretrained_vectors:
            words = getattr(self.trainer.datamodule, "vocab", None)
            if words is None:
                raise WordVectorsError("pretrained_vectors needs a datamodule with a `vocab` (word by id)")
            self.load_vectors(list(words))

    # --- steps ----------------------------------------------------------------------------------------
    def _step(self, batch: Any, phase: str) -> tuple[Tensor, Tensor]:
        """The batch's loss and its trees' root logits ``(trees, num_classes)``, detached."""
        logits = self(batch)
        labels = batch.labels
        trees = len(batch.roots)
        loss = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum") / trees
        roots = logits.detach()[batch.roots]
        getattr(self, f"{phase}_loss").update(loss.detach(), weight=trees)
        getattr(self, f"{phase}_acc").update(roots, labels[batch.roots])
        getattr(self, f"{phase}_node_acc").update(logits.detach(), labels)
        return loss, roots

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")[0]

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The root logits, for callbacks (``RootConfusionMatrix``)."""
        return self._step(batch, "val")[1]

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self(batch)[batch.roots].softmax(dim=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        embedding = [p for p in self.embedding.parameters() if p.requires_grad]
        others = [p for name, p in self.named_parameters() if not name.startswith("embedding.")]
        groups = [{"params": others}]
        if embedding:
            groups.append({"params": embedding, "weight_decay": self.hparams.embedding_weight_decay})
        if self.hparams.sparse_gradients:
            # The optimizers build sparse tensors from the gradients; torch warns unless told whether to
            # check their invariants. Its default (no checks) is kept, explicitly.
            torch.sparse.check_sparse_tensor_invariants.disable()
        return build_optimizer(self.optimizer, groups)


class RootConfusionMatrix(ConfusionMatrix):
    """The validation epoch's confusion matrix of the trees' root sentiment (the sentence, the figure the
    papers report), true classes down and predicted across: ``val/confusion_matrix`` and
    ``figures/confusion_matrix.png``. Class names come from the datamodule's ``classes`` (very negative
    ... very positive). Needs ``TreeLSTM``, whose ``validation_step`` returns the root logits.
    """

    samples = "sentences"

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        roots = (None, batch.labels[batch.roots])  # the (inputs, labels) pair ConfusionMatrix reads
        super().on_validation_batch_end(trainer, pl_module, outputs, roots, batch_idx, dataloader_idx)
