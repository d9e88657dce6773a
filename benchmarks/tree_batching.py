"""Level-batched trees against node-by-node recursion: forward + backward time of TreeLSTM on SST batches.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tree_batching.py --data_dir <folder with train.txt>

Both compute the same loss with the same weights (checked) on the same batches of 25 training trees:
- level-batched: ``TreeLSTM.forward``, one composition per tree height for the whole batch;
- node by node: the plain way of writing a recursive network, a Python recursion over each tree that
  composes one node at a time (the reference the tests compare the batched forward against), with
  the batch's words looked up in one call.
Runs alternate after a warm-up; medians of the per-batch times and their ratio are reported, for both
cells. Dropout is off in both so that their losses can be compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from datamodules.treebank import IGNORE, TreebankDataModule  # noqa: E402
from modules.tree_lstm import TreeLSTM  # noqa: E402


def node_by_node_loss(model: TreeLSTM, batch) -> torch.Tensor:
    """The batch's loss computed one node at a time, recursing over each tree from its root."""
    leaves = batch.level_sizes[0]
    hidden: dict[int, torch.Tensor] = {}
    # One embedding lookup for all the words (per word, the embedding's backward alone would dominate).
    vectors = model.embedding(batch.words)

    def state(node: int) -> torch.Tensor:
        if node < leaves:
            s = model.cell.leaf(vectors[node : node + 1])
        else:
            k = node - leaves
            s = model.cell.compose(state(int(batch.left[k])), state(int(batch.right[k])))
        hidden[node] = model.cell.hidden(s)
        return s

    for root in batch.roots.tolist():
        state(root)
    nodes = sorted(hidden)
    logits = model.classifier(torch.cat([hidden[n] for n in nodes]))
    labels = batch.labels[nodes]
    return F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum") / len(batch.roots)


def batched_loss(model: TreeLSTM, batch) -> torch.Tensor:
    logits = model(batch)
    return F.cross_entropy(logits, batch.labels, ignore_index=IGNORE, reduction="sum") / len(batch.roots)


def timed(fn, model: TreeLSTM, batch) -> tuple[float, float]:
    model.zero_grad()
    start = time.perf_counter()
    loss = fn(model, batch)
    loss.backward()
    return time.perf_counter() - start, loss.item()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", default="data", help="folder holding the SST train.txt")
    parser.add_argument("--batches", type=int, default=20, help="training batches to time")
    args = parser.parse_args()
    dm = TreebankDataModule(data_dir=args.data_dir, batch_size=25)
    batches = [b for _, b in zip(range(args.batches + 1), dm.train_dataloader(), strict=False)]
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} thread(s); {args.batches} batches of 25 trees")
    for cell in ("tree_lstm", "recursive"):
        torch.manual_seed(0)
        # As configs/tree_lstm.yaml (sparse embedding gradients); eval: no dropout, so the losses match.
        model = TreeLSTM(dm.vocab_size, 5, cell=cell, sparse_gradients=True).eval()
        times: dict[str, list[float]] = {"batched": [], "node by node": []}
        for i, batch in enumerate(batches):
            t_batched, l_batched = timed(batched_loss, model, batch)
            t_nodes, l_nodes = timed(node_by_node_loss, model, batch)
            if abs(l_batched - l_nodes) > 1e-4 * abs(l_nodes):
                raise SystemExit(f"losses differ: {l_batched} vs {l_nodes}")
            if i:  # the first batch is a warm-up
                times["batched"].append(t_batched)
                times["node by node"].append(t_nodes)
        batched, nodes = (statistics.median(times[k]) for k in ("batched", "node by node"))
        print(
            f"{cell:9s}: level-batched {1000 * batched:7.1f} ms/batch, node by node {1000 * nodes:7.1f} "
            f"ms/batch, ratio {nodes / batched:.1f}x"
        )


if __name__ == "__main__":
    main()
