"""The Stanford Sentiment Treebank (PTB-bracketed parse trees, a sentiment label on every node), batched
so that a tree-structured network computes a whole batch level by level.

A file holds one tree a line, e.g. ``(3 (2 It) (4 (4 (2 's) (4 good)) (2 .)))``: every node is
``(label word)`` or ``(label left right)``, labels 0 (very negative) to 4 (very positive). Tokens are
separated by ASCII spaces only: a few SST tokens hold a non-breaking space (``8 1/2`` in train.txt), which
``str.split()`` would cut in two. Brackets inside the text are written ``-LRB-`` / ``-RRB-`` and stay
tokens like any other.

Each tree is parsed once into per-node arrays in post-order (children before their parent, root last):
the leaf's token, left and right child, height (0 for a leaf) and label. A batch concatenates its trees'
nodes and sorts them by height, so the nodes of one height, across the batch, are one contiguous range
(``TreeBatch.level_sizes``): a network computes each range with one batched operation, one level after
the other, rather than node by node in Python.

Word ids are assigned when a loader is made, not when the files are read: a checkpoint carries the
vocabulary it was trained with (``state_dict``), and Lightning restores it after ``setup``, so test and
predict from a checkpoint map words to the ids the model learnt.
"""

from __future__ import annotations

import bisect
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torchvision.datasets.utils import download_and_extract_archive

from core.domains import FolderPath, PositiveInt, Seed, require_at_least
from core.errors import DataConfigError, DataNotFoundError
from datamodules.tensors import TensorBatches, shard_arguments

SST_URL = "https://nlp.stanford.edu/sentiment/trainDevTestTrees_PTB.zip"
SPLIT_FILES = {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}
UNK = "<unk>"
#: the label of nodes that do not count (neutral nodes in binary mode)
IGNORE = -1
NEUTRAL = 2
#: SST's sentiment labels, 0 (very negative) to 4 (very positive): the fine-grained lesson's 5 classes
LABELS = 5
CLASS_NAMES = ("very negative", "negative", "neutral", "positive", "very positive")
# "(", ")" or a run of anything but an ASCII space and brackets: a non-breaking space stays in its token.
_TOKEN = re.compile(r"[()]|[^ ()]+")


class TreeSyntaxError(DataConfigError):
    """A line of a treebank file that is not a binary tree in PTB brackets; the message says where."""


@dataclass
class Treebank:
    """The trees of one file as flat per-node lists; tree ``t`` holds nodes ``offsets[t]:offsets[t+1]``.

    ``left``/``right`` are indices within the tree (-1 for a leaf), ``words`` the leaf's token ("" for an
    inner node); nodes are in post-order, so a tree's root is its last node. ``lines`` holds each tree's
    1-based line in its file (blank lines are skipped), for error messages.
    """

    words: list[str]
    left: list[int]
    right: list[int]
    height: list[int]
    labels: list[int]
    offsets: list[int]
    lines: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def root_labels(self) -> list[int]:
        return [self.labels[end - 1] for end in self.offsets[1:]]

    def leaves(self, tree: int) -> list[str]:
        """The sentence of tree ``tree``, left to right."""
        start, end = self.offsets[tree], self.offsets[tree + 1]
        return [w for w in self.words[start:end] if w]


def parse_trees(lines: Sequence[str], source: str = "<trees>") -> Treebank:
    """Parse PTB-bracketed binary trees, one per line (blank lines skipped).

    Raises ``TreeSyntaxError`` naming ``source`` and the line number of the first malformed line.
    """
    bank = Treebank([], [], [], [], [], [0])
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip(" "):
            continue
        try:
            _parse_line(line, bank)
        except ValueError as error:
            # Drop the half-parsed tree so the bank stays consistent, then report where.
            for values in (bank.words, bank.left, bank.right, bank.height, bank.labels):
                del values[bank.offsets[-1] :]
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise TreeSyntaxError(f"{source}, line {number}: {error}: {shown!r}") from None
        bank.offsets.append(len(bank.labels))
        bank.lines.append(number)
    return bank


def check_labels(bank: Treebank, source: str) -> None:
    """Refuse a node label outside SST's ``0..4``, naming ``source``, the tree's line and the label: the
    labels' ``min`` and ``max`` (two C loops over the file's nodes, faster than making a tensor of them),
    the first bad node looked for only on failure."""
    if not bank.labels or (min(bank.labels) >= 0 and max(bank.labels) < LABELS):
        return
    node = next(i for i, label in enumerate(bank.labels) if not 0 <= label < LABELS)
    tree = bisect.bisect_right(bank.offsets, node) - 1
    raise TreeSyntaxError(
        f"{source}, line {bank.lines[tree]}: label {bank.labels[node]} is outside 0..{LABELS - 1} (SST has "
        f"{LABELS} sentiment classes): fix the tree or use the original file"
    )


def _parse_line(line: str, bank: Treebank) -> None:
    base = bank.offsets[-1]
    # Open nodes: [label, token, children (indices within the tree)].
    stack: list[list[Any]] = []
    done = False
    for match in _TOKEN.finditer(line):
        token = match.group()
        if done:
            what = "unbalanced ')'" if token == ")" else "text after the end of the tree"
            raise ValueError(f"{what} at column {match.start() + 1}")
        if token == "(":
            if stack and stack[-1][1] is not None:
                raise ValueError("a node holds both a word and subtrees")
            stack.append([None, None, []])
        elif token == ")":
            if not stack:
                raise ValueError(f"unbalanced ')' at column {match.start() + 1}")
            label, word, children = stack.pop()
            if label is None:
                raise ValueError("an empty node '()'")
            index = len(bank.labels) - base
            if word is not None:
                bank.words.append(word)
                bank.left.append(-1)
                bank.right.append(-1)
                bank.height.append(0)
            elif len(children) == 2:
                bank.words.append("")
                bank.left.append(children[0])
                bank.right.append(children[1])
                bank.height.append(1 + max(bank.height[base + c] for c in children))
            else:
                raise ValueError(f"a node with {len(children)} subtrees (binary trees need 2) or no word")
            bank.labels.append(label)
            if stack:
                stack[-1][2].append(index)
            else:
                done = True
        else:
            if not stack:
                raise ValueError(f"text outside brackets at column {match.start() + 1}")
            node = stack[-1]
            if node[0] is None:
                # Its range (0..4) is check_labels', over the whole file at once.
                if not token.isdigit():
                    raise ValueError(f"label {token!r} is not a sentiment label 0-4")
                node[0] = int(token)
            elif node[1] is not None:
                raise ValueError(f"a leaf with two tokens ({node[1]!r} {token!r})")
            elif node[2]:
                raise ValueError("a node holds both subtrees and a word")
            else:
                node[1] = token
    if stack or not done:
        raise ValueError("unbalanced '(': the tree is not closed")


def read_trees(path: Path) -> Treebank:
    with path.open(encoding="utf-8") as lines:
        return parse_trees(lines, source=str(path))


def build_vocab(bank: Treebank, min_freq: int = 1) -> list[str]:
    """``<unk>`` then the tokens seen at least ``min_freq`` times, most frequent first, ties by first use.

    A pure function of the file, so the same train.txt always gives the same ids.
    """
    counts = Counter(w for w in bank.words if w)  # inner nodes have no word ("")
    return [UNK, *(w for w, n in counts.most_common() if n >= min_freq and w != UNK)]


class TreeBatch(NamedTuple):
    """A batch of trees, nodes sorted by height: nodes ``0:level_sizes[0]`` are the leaves, the next
    ``level_sizes[1]`` nodes are of height 1, and so on. Lightning moves the tensors to the device.

    - ``words``: ``(leaves,)`` word ids of the leaves.
    - ``left``, ``right``: ``(inner nodes,)`` batch indices of the children of nodes ``leaves:``.
    - ``labels``: ``(nodes,)`` every node's label, ``IGNORE`` (-1) where it does not count.
    - ``roots``: ``(trees,)`` batch index of each tree's root, in the order the trees were drawn.
    """

    words: Tensor
    left: Tensor
    right: Tensor
    labels: Tensor
    roots: Tensor
    level_sizes: tuple[int, ...]


class EncodedTrees:
    """One split as tensors (word ids, children, heights, labels, offsets) that batches are cut from."""

    def __init__(self, bank: Treebank, word_ids: dict[str, int], binary: bool) -> None:
        roots = torch.tensor(bank.root_labels(), dtype=torch.long)
        offsets = torch.tensor(bank.offsets, dtype=torch.long)
        labels = torch.tensor(bank.labels, dtype=torch.long)
        words = torch.tensor([word_ids.get(w, 0) for w in bank.words], dtype=torch.long)
        left = torch.tensor(bank.left, dtype=torch.long)
        right = torch.tensor(bank.right, dtype=torch.long)
        height = torch.tensor(bank.height, dtype=torch.long)
        if binary:
            # SST-2: trees whose sentence is neutral are dropped; neutral phrases inside the others are
            # kept for composition but do not count; 0, 1 -> negative (0), 3, 4 -> positive (1).
            keep = roots != NEUTRAL
            sizes = offsets[1:] - offsets[:-1]
            nodes = torch.repeat_interleave(keep, sizes)
            offsets = torch.cat([offsets[:1], sizes[keep].cumsum(0)])
            words, left, right, height, labels = (t[nodes] for t in (words, left, right, height, labels))
            labels = torch.where(labels == NEUTRAL, IGNORE, (labels > NEUTRAL).long())
        self.words, self.left, self.right, self.height, self.labels = words, left, right, height, labels
        self.offsets = offsets

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, trees: Tensor) -> TreeBatch:
        """Concatenate ``trees`` (indices) and sort their nodes by height, all with tensor operations."""
        starts, sizes = self.offsets[trees], self.offsets[trees + 1] - self.offsets[trees]
        first = sizes.cumsum(0) - sizes  # where each tree starts in the batch
        total = int(sizes.sum())
        source = torch.arange(total) + torch.repeat_interleave(starts - first, sizes, output_size=total)
        shift = torch.repeat_interleave(first, sizes, output_size=total)
        left, right = self.left[source], self.right[source]
        height = self.height[source]
        order = torch.argsort(height, stable=True)
        position = torch.empty_like(order)
        position[order] = torch.arange(total)
        leaves = int((height == 0).sum())
        inner = order[leaves:]
        return TreeBatch(
            words=self.words[source[order[:leaves]]],
            left=position[left[inner] + shift[inner]],
            right=position[right[inner] + shift[inner]],
            labels=self.labels[source[order]],
            roots=position[first + sizes - 1],
            level_sizes=tuple(torch.bincount(height).tolist()),
        )


class TreeBatches(TensorBatches):
    """``TensorBatches`` over tree indices, each batch of indices collated into a ``TreeBatch``.

    The seeded per-epoch shuffle (``sampler.set_epoch``), the sharding across processes and the
    mid-epoch resumption are ``TensorBatches``'; this class only turns indices into trees.
    """

    def __init__(self, trees: EncodedTrees, batch_size: int, **kwargs: Any) -> None:
        """``kwargs``: ``TensorBatches``' shuffling and sharding arguments."""
        super().__init__(torch.arange(len(trees)), batch_size=batch_size, **kwargs)
        self.trees = trees

    def __iter__(self) -> Iterator[TreeBatch]:  # type: ignore[override]
        for (indices,) in super().__iter__():
            yield self.trees.batch(indices)


class TreebankDataModule(LightningDataModule):
    """SST trees from ``data_dir``: train.txt for fit (and the vocabulary), dev.txt for validation,
    test.txt for test and predict; a file is read only by the stage that needs it.

    Every file is checked once, when it is read (``check_data``): a well-formed binary tree a line
    (``parse_trees``), every label within 0..4; an error names the file and the line.

    Args:
        data_dir: Folder holding train.txt, dev.txt and test.txt (Stanford's ``trees/`` folder); a folder,
            or a path where ``download`` makes one.
        mode: ``fine_grained``: the 5 labels; ``binary``: negative (0, 1) vs positive (3, 4), trees with
            a neutral root dropped, neutral nodes not counted. The vocabulary is the same in both.
        batch_size: Trees per batch (>= 1).
        min_freq: Training tokens seen fewer times become ``<unk>`` (id 0) (>= 1).
        seed: Seeds the per-epoch shuffle of the training trees (0 to 2**32 - 1).
        download: Fetch Stanford's trainDevTestTrees_PTB.zip into ``data_dir`` when files are absent.
        predict_split: The split ``predict`` reads: ``test`` (default), ``dev`` or ``train``.
    """

    #: What ``predict`` runs on, for the message that answers ``--data.predict_path`` (this data is made
    #: or named by its own arguments, not read from the user's files).
    predicts_on: ClassVar[str] = "the SST trees of the split --data.predict_split names (test, dev or train)"

    #: Trees are served in a seeded order and not augmented: a fit is deterministic (docs/architecture.md).
    deterministic_args: ClassVar[dict[str, Any] | None] = {}

    @classmethod
    def write_sample(cls, root: Path) -> dict[str, Any]:
        """Tests' data: 40 training, 12 dev and 12 test trees in the SST format."""
        from datamodules._samples import write_treebank

        return {"data_dir": str(write_treebank(root, {"train": 40, "dev": 12, "test": 12}))}

    def __init__(
        self,
        data_dir: FolderPath = "data",
        mode: Literal["fine_grained", "binary"] = "fine_grained",
        batch_size: PositiveInt = 25,
        min_freq: PositiveInt = 1,
        seed: Seed = 42,
        download: bool = False,
        predict_split: Literal["train", "dev", "test"] = "test",
    ) -> None:
        super().__init__()
        # The parser refuses these from the command line; the checks are for a caller in Python.
        if mode not in ("fine_grained", "binary"):
            raise DataConfigError(f"--data.mode must be fine_grained or binary, got {mode!r}")
        require_at_least("data", 1, batch_size=batch_size, min_freq=min_freq)
        if predict_split not in SPLIT_FILES:
            raise DataConfigError(f"--data.predict_split must be train, dev or test, got {predict_split!r}")
        self.data_dir = Path(data_dir)
        self.mode = mode
        self.batch_size = batch_size
        self.min_freq = min_freq
        self.seed = seed
        self.download = download
        self.predict_split = predict_split
        self.banks: dict[str, Treebank] = {}
        self._vocab: list[str] | None = None
        self._encoded: dict[str, EncodedTrees] = {}

    # --- files ----------------------------------------------------------------------------------------
    def missing_message(self, name: str) -> str:
        return (
            f"{name} not found in data_dir={self.data_dir}: the folder must hold the SST trees "
            f"({', '.join(SPLIT_FILES.values())}; each stage reads only the files it needs); pass "
            "--data.download true to fetch them (needs the internet), or unpack "
            f"{SST_URL}'s trees/ folder there and point --data.data_dir at it"
        )

    def prepare_data(self) -> None:
        # Lightning calls this once per node before setup: the place to download.
        if self.download and not all((self.data_dir / f).is_file() for f in SPLIT_FILES.values()):
            self.fetch()

    def fetch(self) -> None:
        """Download and unpack Stanford's archive; its files land in ``data_dir`` itself."""
        try:
            download_and_extract_archive(SST_URL, download_root=str(self.data_dir))
        except (OSError, RuntimeError) as error:  # URLError is an OSError
            raise DataNotFoundError(
                f"could not download {SST_URL} into data_dir={self.data_dir} ({error}); download it "
                f"elsewhere and unpack its trees/ folder's {', '.join(SPLIT_FILES.values())} there"
            ) from error
        unpacked = self.data_dir / "trees"
        for name in SPLIT_FILES.values():
            if (unpacked / name).is_file():
                shutil.move(str(unpacked / name), str(self.data_dir / name))

    def bank(self, split: str) -> Treebank:
        """The parsed trees of ``split`` (train, dev or test), read once."""
        if split not in self.banks:
            path = self.data_dir / SPLIT_FILES[split]
            if not path.is_file():
                if self.download:
                    self.fetch()
                if not path.is_file():
                    raise DataNotFoundError(self.missing_message(path.name))
            bank = read_trees(path)
            if not len(bank):
                raise DataConfigError(f"{path} holds no trees: expected one PTB-bracketed tree per line")
            self.check_data(split, path, bank)
            self.banks[split] = bank
        return self.banks[split]

    def check_data(self, split: str, path: Path, bank: Treebank) -> None:
        """Check ``split``'s trees, read from ``path``, once (never per batch): every label within 0..4.
        Their structure (balanced brackets, binary nodes, a word a leaf) is checked as they are parsed."""
        check_labels(bank, str(path))

    # --- what the model needs -----------------------------------------------------------------------
    @property
    def vocab(self) -> list[str]:
        """Words by id: ``<unk>`` (0) then the training tokens; built from train.txt on first use."""
        if self._vocab is None:
            self._vocab = build_vocab(self.bank("train"), self.min_freq)
        return self._vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def num_classes(self) -> int:
        return 5 if self.mode == "fine_grained" else 2

    @property
    def classes(self) -> list[str]:
        """The classes' names by index, for figures: SST's five, or negative and positive (binary)."""
        return list(CLASS_NAMES) if self.mode == "fine_grained" else ["negative", "positive"]

    # --- stages and loaders ---------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        needed = {"fit": ("train", "dev"), "validate": ("dev",), "test": ("test",)}
        for split in needed.get(stage, (self.predict_split,)):
            self.bank(split)

    def encoded(self, split: str) -> EncodedTrees:
        if split not in self._encoded:
            word_ids = {w: i for i, w in enumerate(self.vocab)}
            self._encoded[split] = EncodedTrees(self.bank(split), word_ids, binary=self.mode == "binary")
            if not len(self._encoded[split]):
                raise DataConfigError(f"{SPLIT_FILES[split]} in {self.data_dir} has no non-neutral trees")
        return self._encoded[split]

    def _loader(self, split: str, shuffle: bool = False) -> TreeBatches:
        shards = shard_arguments(self.trainer, split)
        return TreeBatches(self.encoded(split), self.batch_size, shuffle=shuffle, seed=self.seed, **shards)

    def train_dataloader(self) -> TreeBatches:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> TreeBatches:
        return self._loader("dev")

    def test_dataloader(self) -> TreeBatches:
        return self._loader("test")

    def predict_dataloader(self) -> TreeBatches:
        return self._loader(self.predict_split)

    # --- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        # The ids a checkpoint's embedding rows belong to travel with it.
        return {"vocab": self.vocab}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        vocab = state_dict.get("vocab")
        if vocab is not None and vocab != self._vocab:
            self._vocab = list(vocab)
            self._encoded.clear()  # re-encode with the checkpoint's ids
