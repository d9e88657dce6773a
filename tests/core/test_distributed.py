"""core/distributed.py's pieces, and the rank-safety rule checked over the code: nothing that
communicates runs inside rank-zero-only code. tests/experiments/test_ddp_lessons.py runs them on two
processes."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from core.distributed import (
    gather_outputs,
    gather_samples,
    in_order,
    interleave,
    per_sample,
    run_dir,
    sample_positions,
)
from datamodules.tensors import TensorBatches
from tests.conftest import REPO

PACKAGES = ("experiments", "modules", "datamodules")


def one_process(**attributes: object) -> SimpleNamespace:
    return SimpleNamespace(world_size=1, is_global_zero=True, fast_dev_run=False, **attributes)


def test_shards_put_back_in_dataset_order_each_sample_once() -> None:
    # Two ranks of an equal-shard loader over 5 samples: rank 1 repeats sample 0 to match rank 0's 3.
    rank0 = ({"x": torch.tensor([10, 12, 14]), "name": ["a", "c", "e"]}, torch.tensor([0, 2, 4]))
    rank1 = ({"x": torch.tensor([11, 13, 10]), "name": ["b", "d", "a"]}, torch.tensor([1, 3, 0]))
    whole = in_order([rank0, rank1])
    assert whole["x"].tolist() == [10, 11, 12, 13, 14] and whole["name"] == ["a", "b", "c", "d", "e"]
    # Every rank holding all of it (a loader that is not sharded): each sample still once.
    assert in_order([rank0, rank0])["x"].tolist() == [10, 12, 14]
    # A rank with nothing is left out; a loader of unknown order gives rows as they come.
    assert in_order([({}, None), rank1])["x"].tolist() == [10, 11, 13]
    assert in_order([(rank0[0], None), (rank1[0], None)])["name"] == ["a", "c", "e", "b", "d", "a"]
    assert in_order([]) == {}


def test_interleave_deals_rows_back_in_turn() -> None:
    parts = [{"x": torch.tensor([0, 2, 4])}, {"x": torch.tensor([1, 3])}]
    assert interleave(parts)["x"].tolist() == [0, 1, 2, 3, 4]


def test_batch_outputs_as_rows() -> None:
    assert per_sample([torch.ones(2, 3), torch.zeros(1, 3)]).shape == (3, 3)
    assert per_sample([["a", "b"], ["c"]]) == ["a", "b", "c"]
    assert per_sample([]) == []
    assert per_sample([{"loss": 1}]) is None  # no rows to tell apart
    assert per_sample([torch.tensor(1.0)]) is None  # a scalar per batch


def test_one_process_gets_its_own_rows_back_ordered() -> None:
    trainer = one_process()
    columns = {"x": torch.tensor([5, 6, 7])}
    assert gather_samples(trainer, columns, None) is columns
    assert gather_samples(trainer, columns, torch.tensor([2, 0, 1]))["x"].tolist() == [6, 7, 5]
    assert gather_outputs(trainer, [["a"], ["b"]], loader=None) == ["a", "b"]
    assert gather_outputs(trainer, [{"loss": 1}], loader=None) == [{"loss": 1}]


def test_sample_positions_of_each_kind_of_loader() -> None:
    data = torch.arange(10)
    shard = TensorBatches(data, batch_size=3, num_replicas=2, rank=1)
    assert sample_positions(shard).tolist() == [1, 3, 5, 7, 9]
    assert sample_positions(shard, 2).tolist() == [1, 3]
    dataset = TensorDataset(data)
    sampler = DistributedSampler(dataset, num_replicas=3, rank=2, shuffle=False)  # pads 10 to 12
    assert sample_positions(DataLoader(dataset, batch_size=4, sampler=sampler)).tolist() == [2, 5, 8, 1]
    assert sample_positions(DataLoader(dataset, batch_size=4)).tolist() == list(range(10))
    # A shuffling loader would draw a new order, not the one it served: unknown.
    assert sample_positions(DataLoader(dataset, batch_size=4, shuffle=True)) is None
    assert sample_positions(iter([1, 2])) is None


def test_run_dir_is_rank_zeros_folder_and_none_elsewhere(tmp_path: Path) -> None:
    tensorboard = TensorBoardLogger(tmp_path, name="lesson", version=3)
    assert run_dir(one_process(loggers=[tensorboard])) == tmp_path / "lesson" / "version_3"
    assert (
        run_dir(one_process(loggers=[CSVLogger(tmp_path, name="csv", version=0)]))
        == tmp_path / "csv" / "version_0"
    )
    other_rank = SimpleNamespace(
        world_size=2, is_global_zero=False, fast_dev_run=False, loggers=[tensorboard]
    )
    assert run_dir(other_rank) is None
    assert run_dir(one_process(loggers=[])) is None
    assert (
        run_dir(SimpleNamespace(world_size=1, is_global_zero=True, fast_dev_run=1, loggers=[tensorboard]))
        is None
    )


#: Calls that communicate (or, for log_dir, read a property that does).
COLLECTIVES = {
    *("gather_objects", "gather_samples", "gather_outputs", "collect_all", "broadcast", "barrier"),
    *("all_gather", "all_reduce", "reduce", "reduce_boolean_decision", "compute", "log_dir"),
}


def rank_zero_only_functions(tree: ast.AST) -> list[ast.FunctionDef]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "rank_zero_only" for d in node.decorator_list)
    ]


def names_used(node: ast.AST) -> set[str]:
    return {
        n.attr if isinstance(n, ast.Attribute) else n.id
        for n in ast.walk(node)
        if isinstance(n, (ast.Attribute, ast.Name))
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_no_collective_inside_rank_zero_only_code(package: str) -> None:
    """The rule of docs/architecture.md, where it can be read off the code: a ``@rank_zero_only`` function
    calls nothing that communicates, and nothing reads ``trainer.log_dir`` (``run_dir`` is its safe form)."""
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        reads = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "log_dir"
            and "trainer" in ast.unparse(node.value)
        ]
        assert not reads, f"{path.name}:{reads}: trainer.log_dir broadcasts; use run_dir"
        for function in rank_zero_only_functions(tree):
            found = names_used(function) & COLLECTIVES
            assert not found, f"{path.name}: @rank_zero_only {function.name} calls {sorted(found)}"
