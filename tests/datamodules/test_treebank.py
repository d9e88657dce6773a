"""TreebankDataModule on SST-format files written here: parsing, malformed lines, vocabulary, binary
mode, level-ordered batches, the files each stage needs, download, checkpointed vocabulary."""

from __future__ import annotations

import re
import urllib.error
from pathlib import Path

import pytest
import torch

from core.errors import DataNotFoundError
from datamodules import TreebankDataModule, TreeSyntaxError
from datamodules.treebank import (
    IGNORE,
    SST_URL,
    UNK,
    EncodedTrees,
    build_vocab,
    check_labels,
    parse_trees,
    read_trees,
)
from tests.tree_data import NBSP, write_treebank

SENTENCE = "(3 (2 It) (4 (4 (2 's) (4 good)) (2 .)))"


def test_parse_nesting_in_post_order():
    bank = parse_trees([SENTENCE, "", "(1 (2 a) (0 bad))"])
    assert len(bank) == 2 and bank.offsets == [0, 7, 10]
    # post-order: It, 's, good, ('s good), ., (('s good) .), root
    assert bank.words[:7] == ["It", "'s", "good", "", ".", "", ""]
    assert bank.left[:7] == [-1, -1, -1, 1, -1, 3, 0]
    assert bank.right[:7] == [-1, -1, -1, 2, -1, 4, 5]
    assert bank.height[:7] == [0, 0, 0, 1, 0, 2, 3]
    assert bank.labels == [2, 2, 4, 4, 2, 4, 3, 2, 0, 1]
    assert bank.root_labels() == [3, 1]
    assert bank.leaves(0) == ["It", "'s", "good", "."] and bank.leaves(1) == ["a", "bad"]


def test_tokens_split_on_ascii_spaces_only():
    line = f"(2 (2 (2 -LRB-) (3 8{NBSP}1\\/2)) (2 (2 café) (2 -RRB-)))"
    bank = parse_trees([line])
    # The non-breaking space stays inside its token; brackets in the text stay SST's -LRB-/-RRB-.
    assert bank.leaves(0) == ["-LRB-", f"8{NBSP}1\\/2", "café", "-RRB-"]
    assert bank.labels[1] == 3


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("(3 (2 It) (4 good)", "not closed"),
        ("(3 (2 It) (4 good)))", "unbalanced ')'"),
        ("(7 (2 It) (4 good))", "label 7 is outside 0..4 (SST has 5 sentiment classes)"),
        ("(good (2 It) (4 good))", "label 'good'"),
        ("(3 (2 It))", "1 subtrees"),
        ("(3 (2 a) (2 b) (2 c))", "3 subtrees"),
        ("(3 (2 8 1\\/2) (4 good))", "a leaf with two tokens"),
        ("(3 (2 It) (4 good)) (2 more)", "text after the end"),
        ("(3 (2 It) good)", "both subtrees and a word"),
        ("(3 ())", "empty node"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "train.txt"
    path.write_text(f"{SENTENCE}\n\n{line}\n{SENTENCE}\n", encoding="utf-8")
    with pytest.raises(TreeSyntaxError, match=f"{re.escape(str(path))}, line 3: .*{re.escape(problem)}"):
        check_labels(read_trees(path), str(path))  # the structure as it is parsed, then the labels


def test_vocabulary_from_training_split_with_unknown_token(tmp_path):
    (tmp_path / "train.txt").write_text(
        "(3 (2 the) (4 (4 good) (2 the)))\n(1 (2 the) (1 bad))\n(2 (2 good) (2 film))\n", encoding="utf-8"
    )
    (tmp_path / "dev.txt").write_text("(3 (2 the) (4 unseen))\n", encoding="utf-8")
    dm = TreebankDataModule(data_dir=str(tmp_path))
    # <unk>, then by frequency, ties in order of first use: deterministic ids.
    assert dm.vocab == [UNK, "the", "good", "bad", "film"] and dm.vocab_size == 5
    assert build_vocab(dm.bank("train"), min_freq=2) == [UNK, "the", "good"]
    dev = next(iter(dm.val_dataloader()))
    assert dev.words.tolist() == [1, 0]  # "unseen" is unknown


def assert_batch_is_the_trees(batch, bank, ids, vocab):
    """Rebuild each tree of ``batch`` from its root and compare with the parsed tree."""
    sizes = batch.level_sizes
    height = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    leaves = sizes[0]
    assert len(batch.labels) == sum(sizes) and len(batch.left) == sum(sizes) - leaves
    for node in range(leaves, sum(sizes)):
        children = batch.left[node - leaves], batch.right[node - leaves]
        # Children are computed before their parent, and one of them is exactly one level below.
        assert max(height[c] for c in children) == height[node] - 1

    def walk(node: int) -> tuple[list[str], list[int]]:
        if node < leaves:
            return [vocab[batch.words[node]]], [int(batch.labels[node])]
        left, left_labels = walk(int(batch.left[node - leaves]))
        right, right_labels = walk(int(batch.right[node - leaves]))
        return left + right, left_labels + right_labels + [int(batch.labels[node])]

    for root, tree in zip(batch.roots.tolist(), ids, strict=True):
        words, labels = walk(root)
        start, end = bank.offsets[tree], bank.offsets[tree + 1]
        assert words == bank.leaves(tree)
        assert sorted(labels) == sorted(bank.labels[start:end])
        assert int(batch.labels[root]) == bank.labels[end - 1]


def test_batches_are_level_ordered_trees(tmp_path):
    data = write_treebank(tmp_path, {"train": 30, "dev": 7})
    dm = TreebankDataModule(data_dir=str(data), batch_size=8, seed=5)
    dm.setup("fit")
    bank = dm.bank("train")
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    order = loader.sampler.indices().tolist()
    drawn = []
    for k, batch in enumerate(loader):
        ids = order[8 * k : 8 * (k + 1)]
        assert_batch_is_the_trees(batch, bank, ids, dm.vocab)
        drawn += ids
    assert sorted(drawn) == list(range(30)) and len(loader) == 4
    loader.sampler.set_epoch(1)
    assert loader.sampler.indices().tolist() != order  # reshuffled per epoch, seeded
    val = list(dm.val_dataloader())
    assert_batch_is_the_trees(val[0], dm.bank("dev"), range(7), dm.vocab)


def test_sharded_loaders_split_the_trees(tmp_path):
    data = write_treebank(tmp_path, {"train": 9, "dev": 5})
    dm = TreebankDataModule(data_dir=str(data), batch_size=2)
    from datamodules.treebank import TreeBatches

    trees = dm.encoded("dev")
    shards = [TreeBatches(trees, 2, num_replicas=2, rank=r) for r in (0, 1)]
    roots = [int(trees.labels[trees.offsets[t + 1] - 1]) for t in range(5)]
    seen = [[int(b.labels[r]) for b in shard for r in b.roots] for shard in shards]
    assert len(seen[0]) + len(seen[1]) == 5
    assert sorted(seen[0] + seen[1]) == sorted(roots)


def test_binary_mode_drops_neutral_roots_and_ignores_neutral_nodes(tmp_path):
    lines = [
        "(3 (2 the) (4 good))",  # positive: kept, 'the' ignored
        "(2 (3 fine) (1 dull))",  # neutral root: dropped
        "(0 (1 dull) (0 bad))",
        "(1 (2 the) (1 dull))",
    ]
    bank = parse_trees(lines)
    fine = EncodedTrees(bank, {}, binary=False)
    binary = EncodedTrees(bank, {}, binary=True)
    assert len(fine) == 4 and len(binary) == 3
    assert fine.labels.tolist() == [2, 4, 3, 3, 1, 2, 1, 0, 0, 2, 1, 1]
    assert binary.labels.tolist() == [IGNORE, 1, 1, 0, 0, 0, IGNORE, 0, 0]
    batch = binary.batch(torch.arange(3))
    assert batch.labels[batch.roots].tolist() == [1, 0, 0]
    dm = TreebankDataModule(mode="binary")
    assert dm.num_classes == 2 and TreebankDataModule().num_classes == 5


def test_each_stage_reads_only_its_files(tmp_path):
    data = write_treebank(tmp_path / "sst", {"train": 10, "dev": 4, "test": 0})
    dm = TreebankDataModule(data_dir=str(data))
    dm.setup("fit")  # no test.txt needed
    assert set(dm.banks) == {"train", "dev"}
    with pytest.raises(DataNotFoundError) as error:
        dm.setup("test")
    message = str(error.value)
    assert f"test.txt not found in data_dir={data}" in message
    assert "train.txt, dev.txt, test.txt" in message and "--data.download true" in message
    with pytest.raises(DataNotFoundError, match=r"train\.txt not found"):
        _ = TreebankDataModule(data_dir=str(tmp_path / "empty")).vocab_size


def test_download_unpacks_stanford_trees_into_data_dir(tmp_path, monkeypatch):
    calls = []

    def fake_download(url: str, download_root: str) -> None:
        calls.append(url)
        write_treebank(Path(download_root) / "trees", {"train": 5, "dev": 3, "test": 3})

    monkeypatch.setattr("datamodules.treebank.download_and_extract_archive", fake_download)
    dm = TreebankDataModule(data_dir=str(tmp_path / "data"), download=True)
    dm.prepare_data()
    assert calls == [SST_URL]
    assert all((tmp_path / "data" / f"{s}.txt").is_file() for s in ("train", "dev", "test"))
    dm.setup("test")
    dm.prepare_data()  # the files are there: no second download
    assert calls == [SST_URL]


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    def offline(url: str, download_root: str) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("datamodules.treebank.download_and_extract_archive", offline)
    dm = TreebankDataModule(data_dir=str(tmp_path), download=True)
    expected = f"could not download {SST_URL} into data_dir={tmp_path}"
    with pytest.raises(DataNotFoundError, match=re.escape(expected)):
        dm.prepare_data()


def test_checkpointed_vocabulary_decides_the_ids(tmp_path):
    data = write_treebank(tmp_path, {"train": 12, "dev": 4})
    trained = TreebankDataModule(data_dir=str(data))
    state = trained.state_dict()
    assert state["vocab"] == trained.vocab
    restored = TreebankDataModule(data_dir=str(data))
    batch = next(iter(restored.val_dataloader()))  # encoded with train.txt's ids...
    reversed_vocab = [UNK, *reversed(state["vocab"][1:])]
    restored.load_state_dict({"vocab": reversed_vocab})  # ...until a checkpoint says otherwise
    again = next(iter(restored.val_dataloader()))
    assert restored.vocab == reversed_vocab
    n = len(reversed_vocab)
    assert again.words.tolist() == [0 if i == 0 else n - i for i in batch.words.tolist()]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="mode must be"):
        TreebankDataModule(mode="ternary")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        TreebankDataModule(batch_size=0)
