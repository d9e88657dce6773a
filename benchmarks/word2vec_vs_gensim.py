"""Speed and quality of the word2vec lesson against gensim's Word2Vec, trained in the same run.

    .venv/bin/python benchmarks/word2vec_vs_gensim.py CORPUS [CORPUS ...] \
        [--epochs 5] [--dim 100] [--window 5] [--negative 5] [--min-count 5] [--sample 1e-3] \
        [--workers 2] [--batch-size 16384] [--update-rows 1024] [--repeats 2] [--held-out 0.05] [--autograd]

Each CORPUS is a plain-text file (``../shared/data/text/tinyshakespeare.txt``; the King James Bible as
text: ``apt-get download bible-kjv bible-kjv-text``, unpack both with ``dpkg-deb -x``, then
``usr/bin/bible -p usr/lib gen1:1-rev22:21 > kjv.txt``). Its last ``--held-out`` share of lines is held
out; both sides train on the rest, written to a temporary file, and see the same sentences: its lines,
tokenised by ``datamodules.corpus.tokenize`` (lower case, letters and digits), cut at 10,000 words;
the same vocabulary (``min_count``), subsampling (``sample``), window, negatives, dimension and epochs;
skip-gram with negative sampling.

- gensim: ``Word2Vec(sg=1, hs=0, negative, window, vector_size, min_count, sample, workers, seed)``;
  ``build_vocab`` untimed, timed is ``train(sentences, epochs)``: its worker threads plus its producer
  thread.
- ours: ``configs/word2vec.yaml`` through ``ExperimentCLI(..., run=False)`` with the same settings and no
  held-out slices, validation or callbacks (gensim has none); building the model (which loads the
  compiled loop, as importing gensim loads its Cython) and ``datamodule.prepare()`` (reading, counting
  and encoding the corpus, as ``build_vocab``) untimed, timed is ``trainer.fit``: Lightning's loop with
  logging and ``last.ckpt``, the closed-form step (on a CPU word2vec.c's loop compiled by numba) in
  ``--workers`` background threads (Hogwild, as gensim's workers; one torch thread each) and the
  batch-making thread beside them.
  ``--autograd`` times the autograd path (SGD on sparse gradients) instead, with batches of
  ``--update-rows`` centers (it steps once per batch; RESULTS.md's figure used ``--update-rows 512``).

Repeats alternate the sides; repeat ``r`` seeds gensim with ``1 + r`` and ours with ``42 + r``.

Speed: raw corpus words per second (training words times epochs, over the timed wall seconds), each
side's median over the repeats, and ours / gensim. Goal: >= 1.0x at equal quality. Also words per
CPU-second (the process's CPU time, all threads): on a machine shared with other work the wall time also
measures how much of the CPU each side got (a side with more busy threads gets a larger share), the CPU
time less so.

Quality, each side's repeats averaged (through gensim's ``KeyedVectors``; ours loaded from the
``vectors.txt`` that ``SkipGramModel.save_embedding`` writes, which checks that file's format too):
- held-out loss: the skip-gram negative-sampling loss per (context, center) pair on the held-out lines
  (every pair within ``window``, no subsampling; the same ``negative`` noise words per pair, drawn once
  from the training vocabulary's unigram^0.75 distribution, for both sides), with gensim's input and
  output vectors (``wv``, ``syn1neg``) and ours (``u``, ``v``): the objective both minimise, on text
  neither saw;
- Spearman correlation with human judgements on the pairs of ``wordsim353.tsv`` and ``simlex999.txt``
  (gensim's test data) whose words are both in the vocabulary, and how many pairs that is;
- nearest-neighbour overlap: for the probe words (vocabulary ranks 20 to 520, every 5th), the mean share
  of one model's top-10 neighbours that another's top-10 also holds: ours vs gensim, and, as the level
  that runs of one method reach, gensim vs gensim and ours vs ours (the two repeats' seeds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from datamodules.corpus import tokenize  # noqa: E402
from datamodules.skipgram_sampling import noise_distribution, skipgram_contexts  # noqa: E402
from experiments.cli import ExperimentCLI  # noqa: E402


@dataclass
class Trained:
    wv: object  # gensim KeyedVectors of the input vectors
    outputs: torch.Tensor  # output vectors, rows in wv's order
    wall: float
    cpu: float


def sentences(lines: list[str], max_length: int = 10_000) -> list[list[str]]:
    """Lines as token lists, as TextCorpusDataModule reads them (empty lines left out)."""
    out = []
    for line in lines:
        words = tokenize(line)
        out.extend(words[i : i + max_length] for i in range(0, len(words), max_length))
    return out


def timed(function: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all its threads) of ``function()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def train_gensim(corpus: list[list[str]], args: argparse.Namespace, seed: int) -> Trained:
    from gensim.models import Word2Vec

    model = Word2Vec(
        sg=1,
        hs=0,
        negative=args.negative,
        window=args.window,
        vector_size=args.dim,
        min_count=args.min_count,
        sample=args.sample,
        workers=args.workers,
        seed=seed,
    )
    model.build_vocab(corpus)
    wall, cpu = timed(lambda: model.train(corpus, total_examples=model.corpus_count, epochs=args.epochs))
    return Trained(model.wv, torch.from_numpy(model.syn1neg), wall, cpu)


def ours_cli(path: Path, folder: Path, seed: int, overrides: list[str]) -> ExperimentCLI:
    """``configs/word2vec.yaml`` on ``path`` as the benchmarks train it: no held-out slices, validation or
    callbacks, logs and checkpoints in ``folder``; then ``overrides``. The corpus is read, untimed."""
    cli = ExperimentCLI(
        args=[
            "--config",
            str(REPO / "configs" / "word2vec.yaml"),
            f"--seed_everything={seed}",
            f"--data.path={path}",
            f"--data.seed={seed}",
            "--data.val_fraction=0",
            "--data.test_fraction=0",
            "--trainer.limit_val_batches=0",
            "--trainer.callbacks=[]",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.logger.init_args.save_dir={folder}",
            f"--checkpoint.dirpath={folder / 'checkpoints'}",
            *overrides,
        ],
        run=False,
    )
    cli.datamodule.prepare()  # reading, counting and encoding the corpus: gensim's build_vocab, untimed
    return cli


def train_ours(path: Path, args: argparse.Namespace, folder: Path, seed: int) -> Trained:
    from gensim.models import KeyedVectors

    torch.set_num_threads(1)
    overrides = [
        f"--data.min_count={args.min_count}",
        f"--data.sample={args.sample}",
        f"--data.window={args.window}",
        f"--data.negative={args.negative}",
        # The autograd path takes one optimizer step per batch: a batch the size of one closed-form
        # update computes the same updates (larger ones diverge with SGD).
        f"--data.batch_size={args.update_rows if args.autograd else args.batch_size}",
        f"--model.embedding_dim={args.dim}",
        f"--model.update_rows={args.update_rows}",
        f"--model.workers={args.workers}",
        f"--model.closed_form={not args.autograd}",
        f"--trainer.max_epochs={args.epochs}",
    ]
    cli = ours_cli(path, folder, seed, overrides)
    wall, cpu = timed(lambda: cli.trainer.fit(cli.model, cli.datamodule))
    vectors = folder / "vectors.txt"
    cli.model.save_embedding(cli.datamodule.words, vectors)
    wv = KeyedVectors.load_word2vec_format(str(vectors), binary=False)
    return Trained(wv, cli.model.v_embeddings.weight.detach().clone(), wall, cpu)


def held_out_pairs(lines: list[str], wv: object, args: argparse.Namespace) -> tuple[torch.Tensor, ...]:
    """(context, center, noise) of every pair within ``window`` in the held-out lines, in ``wv``'s ids."""
    index = wv.key_to_index
    words, lines_of = [], []
    for number, line in enumerate(lines):
        ids = [index[w] for w in tokenize(line) if w in index]
        words += ids
        lines_of += [number] * len(ids)
    words_t, lines_t = torch.tensor(words), torch.tensor(lines_of)
    contexts = skipgram_contexts(words_t, lines_t, torch.full_like(words_t, args.window), args.window)
    valid = contexts >= 0
    center = words_t[valid.nonzero()[:, 0]]
    counts = torch.tensor([wv.get_vecattr(w, "count") for w in wv.index_to_key])
    generator = torch.Generator().manual_seed(0)
    noise = torch.multinomial(
        noise_distribution(counts).float(), len(center) * args.negative, replacement=True, generator=generator
    )
    return contexts[valid], center, noise.view(len(center), args.negative)


def held_out_loss(model: Trained, reference: object, pairs: tuple[torch.Tensor, ...]) -> float:
    """Mean negative-sampling loss per pair; ``pairs`` are in ``reference``'s ids."""
    order = torch.tensor([model.wv.key_to_index[w] for w in reference.index_to_key])
    inputs = torch.from_numpy(model.wv.vectors)[order]
    outputs = model.outputs[order]
    context, center, noise = pairs
    u = inputs[context]
    positive = F.logsigmoid((u * outputs[center]).sum(1))
    negative = F.logsigmoid(-torch.einsum("pd,pkd->pk", u, outputs[noise])) * (noise != center.unsqueeze(1))
    return float(-(positive + negative.sum(1)).mean())


def similarity(wv: object) -> dict[str, tuple[float, int]]:
    """Spearman correlation and the number of pairs used, on gensim's two word-similarity sets."""
    from gensim.test.utils import datapath

    out = {}
    for name in ("wordsim353.tsv", "simlex999.txt"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, spearman, oov = wv.evaluate_word_pairs(datapath(name), dummy4unknown=False)
        lines = Path(datapath(name)).read_text(encoding="utf-8").splitlines()
        total = sum(1 for line in lines if line.strip() and not line.startswith("#"))
        out[name] = (float(spearman.statistic), round(total * (1 - oov / 100)))
    return out


def overlap(a: object, b: object, probes: list[str], k: int = 10) -> float:
    shares = []
    for word in probes:
        near_a = {w for w, _ in a.most_similar(word, topn=k)}
        near_b = {w for w, _ in b.most_similar(word, topn=k)}
        shares.append(len(near_a & near_b) / k)
    return statistics.mean(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--negative", type=int, default=5)
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--sample", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--update-rows", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--held-out", type=float, default=0.05)
    parser.add_argument("--autograd", action="store_true", help="time the autograd path of ours")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import gensim

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, gensim {gensim.__version__}",
        flush=True,
    )
    for path in args.corpora:
        lines = path.read_text(encoding="utf-8").splitlines()
        cut = len(lines) - round(len(lines) * args.held_out)
        train_lines, held_lines = lines[:cut], lines[cut:]
        corpus = sentences(train_lines)
        words = sum(map(len, corpus))
        print(
            f"\n## {path.name}: {words:,} training words in {len(corpus):,} sentences, "
            f"{len(held_lines):,} lines held out; {args.epochs} epochs",
            flush=True,
        )
        runs: dict[str, list[Trained]] = {"gensim": [], "ours": []}
        with tempfile.TemporaryDirectory() as tmp:
            train_file = Path(tmp) / f"{path.stem}.train.txt"
            train_file.write_text("\n".join(train_lines) + "\n", encoding="utf-8")
            for repeat in range(args.repeats):
                for side in ("gensim", "ours"):
                    if side == "gensim":
                        run = train_gensim(corpus, args, seed=1 + repeat)
                    else:
                        run = train_ours(train_file, args, Path(tmp) / f"ours{repeat}", seed=42 + repeat)
                    runs[side].append(run)
                    print(
                        f"{side:6s} run {repeat}: {run.wall:6.2f} s wall, {run.cpu:6.2f} s CPU: "
                        f"{words * args.epochs / run.wall:,.0f} words/s, "
                        f"{words * args.epochs / run.cpu:,.0f} words per CPU-second",
                        flush=True,
                    )
        for unit, attribute in (("words/s", "wall"), ("words per CPU-second", "cpu")):
            theirs = statistics.median(words * args.epochs / getattr(r, attribute) for r in runs["gensim"])
            mine = statistics.median(words * args.epochs / getattr(r, attribute) for r in runs["ours"])
            print(
                f"{unit} (median): gensim {theirs:,.0f}, ours {mine:,.0f}: ours / gensim {mine / theirs:.2f}x"
            )
        reference = runs["gensim"][0].wv
        print(f"vocabulary: gensim {len(reference):,}, ours {len(runs['ours'][0].wv):,}")
        pairs = held_out_pairs(held_lines, reference, args)
        losses = {side: [held_out_loss(r, reference, pairs) for r in runs[side]] for side in runs}
        shown = {side: " ".join(f"{x:.4f}" for x in losses[side]) for side in losses}
        print(
            f"held-out loss per pair ({len(pairs[0]):,} pairs): gensim {shown['gensim']}, "
            f"ours {shown['ours']}"
        )
        scores = {side: [similarity(r.wv) for r in runs[side]] for side in runs}
        for name in ("wordsim353.tsv", "simlex999.txt"):
            pairs_used = scores["gensim"][0][name][1]
            mean = {side: statistics.mean(s[name][0] for s in scores[side]) for side in runs}
            print(
                f"{name}: Spearman gensim {mean['gensim']:.3f}, ours {mean['ours']:.3f} (mean of the runs; "
                f"{pairs_used} pairs in the vocabulary)"
            )
        probes = reference.index_to_key[20:520:5]
        across = statistics.mean(overlap(o.wv, g.wv, probes) for o in runs["ours"] for g in runs["gensim"])
        text = f"top-10 neighbour overlap over {len(probes)} probe words: ours vs gensim {across:.3f}"
        if args.repeats > 1:
            within = {side: overlap(runs[side][0].wv, runs[side][1].wv, probes) for side in runs}
            text += f", gensim vs gensim {within['gensim']:.3f}, ours vs ours {within['ours']:.3f}"
        print(text)
        for word in ("king", "love", "god", "night"):
            if word in reference.key_to_index:
                print(f"  {word}: ours {[w for w, _ in runs['ours'][0].wv.most_similar(word, topn=5)]}")
                print(f"  {word}: gensim {[w for w, _ in reference.most_similar(word, topn=5)]}")


if __name__ == "__main__":
    main()
