"""What a word-embedding run shows and leaves behind (the 单词嵌入 lesson's callback): nearest neighbours,
TensorBoard's projector, and the vectors in word2vec's text format.

``WordEmbeddings`` needs a module with ``embeddings()``, ``nearest(ids, k)`` and
``save_embedding(words, path)`` (``SkipGramModel``) and a datamodule with ``words``, the vocabulary in id
order (``TextCorpusDataModule``). It draws and writes on global rank 0 only, from the weights every rank
holds alike, and communicates with no other rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor

from core.distributed import run_dir
from core.domains import NonNegativeInt, PositiveInt
from core.errors import ExperimentError
from core.figures import log_figure, logs_images, new_figure


def neighbours_of(
    pl_module: LightningModule, words: list[str], probes: list[str], k: int
) -> list[tuple[int, list[tuple[int, float]]]]:
    """Each probe word in the vocabulary, as its id with the ids and cosines of its ``k`` nearest words."""
    index = {w: i for i, w in enumerate(words)}
    present = [index[w] for w in probes if w in index]
    if not present:
        return []
    similarity, ids = pl_module.nearest(torch.tensor(present), k)
    return [
        (word, list(zip(nbrs, sims, strict=True)))
        for word, sims, nbrs in zip(present, similarity.tolist(), ids.tolist(), strict=True)
    ]


def neighbour_lines(pl_module: LightningModule, words: list[str], probes: list[str], k: int) -> list[str]:
    """One line per probe word in the vocabulary: ``word: neighbour (cosine), ...``."""
    return [
        f"{words[word]}: " + ", ".join(f"{words[j]} ({s:.2f})" for j, s in nbrs)
        for word, nbrs in neighbours_of(pl_module, words, probes, k)
    ]


def pca_2d(vectors: Tensor) -> Tensor:
    """``(n, 2)`` coordinates of ``vectors`` ``(n, d)`` on their two principal axes, after scaling each
    to unit length (cosine similarity is what the neighbours are ranked by). Each axis's sign is fixed
    (its largest coordinate positive), so a figure does not flip between runs for no reason."""
    unit = F.normalize(vectors.double(), dim=1)
    centred = unit - unit.mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    points = centred @ vh[:2].T
    if points.shape[1] < 2:  # fewer than two words or dimensions: the second axis is flat
        points = torch.cat([points, points.new_zeros(len(points), 2 - points.shape[1])], dim=1)
    flip = torch.where(points.gather(0, points.abs().argmax(dim=0, keepdim=True)) < 0, -1.0, 1.0)
    return points * flip


def neighbour_map(
    vectors: Tensor, groups: list[tuple[int, list[int]]]
) -> list[tuple[int, int, float, float]]:
    """The points of the neighbours figure: ``(word id, group, x, y)`` for each probe (group ``g``, the
    probe's place in ``groups``) and each of its neighbours not shown already, at its ``pca_2d``
    coordinates among all of them. ``vectors`` holds every word's vector by id."""
    ids: list[int] = []
    group_of: list[int] = []
    for group, (probe, nbrs) in enumerate(groups):
        for word in [probe, *nbrs]:
            if word not in ids:
                ids.append(word)
                group_of.append(group)
    if not ids:
        return []
    points = pca_2d(vectors[torch.tensor(ids)].cpu())
    return [
        (word, group, round(x, 4), round(y, 4))
        for word, group, (x, y) in zip(ids, group_of, points.tolist(), strict=True)
    ]


class WordEmbeddings(Callback):
    """Nearest neighbours of probe words in TensorBoard (text) after each validation; at the end of
    training the most frequent words' vectors in TensorBoard's projector and, in the run folder,
    ``vectors.txt`` (word2vec text format), ``neighbours.txt`` and ``figures/neighbours.png`` (the probe
    words and their nearest neighbours on a plane); ``predict`` writes the same three files.

    Args:
        probes: Words whose neighbours are shown; unset: eight words of frequency ranks 100 to 800.
        neighbours: Neighbours per probe word (a count >= 1).
        projector_words: The most frequent words whose vectors go to the projector (a count >= 0; 0: none).
    """

    def __init__(
        self,
        probes: list[str] | None = None,
        neighbours: PositiveInt = 10,
        projector_words: NonNegativeInt = 2000,
    ) -> None:
        self.probes = probes
        self.neighbours = neighbours
        self.projector_words = projector_words

    @staticmethod
    def _words(trainer: Trainer) -> list[str]:
        words = getattr(trainer.datamodule, "words", None)
        if words is None:
            raise ExperimentError(
                "WordEmbeddings needs a datamodule with a vocabulary (words), such as TextCorpusDataModule"
            )
        return words

    def _probes(self, words: list[str]) -> list[str]:
        if self.probes is not None:
            return self.probes
        # Frequent enough to have learnt something, rare enough not to be "the", "and", "of".
        return [words[r] for r in range(100, min(len(words), 900), 100)] or words[:8]

    def _text(self, trainer: Trainer, pl_module: LightningModule) -> str:
        words = self._words(trainer)
        return "\n".join(neighbour_lines(pl_module, words, self._probes(words), self.neighbours))

    @staticmethod
    def _tensorboard(trainer: Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._tensorboard(trainer)
        if trainer.sanity_checking or logger is None:
            return
        # Two spaces before each newline: TensorBoard renders text as Markdown.
        text = self._text(trainer, pl_module).replace("\n", "  \n")
        logger.experiment.add_text("embeddings/neighbours", text, global_step=trainer.global_step)

    @rank_zero_only
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        logger = self._tensorboard(trainer)
        words = self._words(trainer)
        if logger is not None and self.projector_words:
            n = min(self.projector_words, len(words))
            logger.experiment.add_embedding(
                pl_module.embeddings()[:n].cpu(),
                metadata=words[:n],
                global_step=trainer.global_step,
                tag="words",
            )
        self._write(trainer, pl_module)

    @rank_zero_only
    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module)

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The probe words and their nearest neighbours on the plane of their two principal axes, one
        colour per probe: ``embeddings/neighbour_map`` and ``figures/neighbours.png``."""
        if not logs_images(trainer):
            return
        words = self._words(trainer)
        shown = min(self.neighbours, 5)  # of each probe: more labels would cover one another
        groups = [
            (word, [j for j, _ in nbrs])
            for word, nbrs in neighbours_of(pl_module, words, self._probes(words), shown)
        ]
        points = [
            (words[word], group, x, y, word == groups[group][0])
            for word, group, x, y in neighbour_map(pl_module.embeddings(), groups)
        ]
        if not points:
            return
        # predict restores a checkpoint without its epoch count: only fit names one.
        when = f"; after {trainer.current_epoch} epochs" if trainer.state.fn == "fit" else ""

        def draw() -> Any:
            figure = new_figure((7, 5), layout="constrained")
            ax = figure.subplots()
            colours = [f"C{group % 10}" for _, group, _, _, _ in points]
            ax.scatter([p[2] for p in points], [p[3] for p in points], c=colours, s=12)
            for word, group, x, y, probe in points:
                weight, size = ("bold", 11) if probe else ("normal", 8)
                ax.annotate(
                    word, (x, y), xytext=(3, 2), textcoords="offset points", color=f"C{group % 10}",
                    fontsize=size, fontweight=weight,
                )  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"nearest {shown} words of each probe (bold), 2-D PCA{when}")
            return figure

        # Not "embeddings/neighbours", the text of the same neighbours: one tag, one kind of summary.
        log_figure(trainer, draw, "embeddings/neighbour_map", png_name="neighbours")

    def _write(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._draw(trainer, pl_module)
        folder = run_dir(trainer)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        pl_module.save_embedding(self._words(trainer), folder / "vectors.txt")
        (folder / "neighbours.txt").write_text(self._text(trainer, pl_module) + "\n", encoding="utf-8")
        rank_zero_info(f"Word vectors written to {Path(folder) / 'vectors.txt'}")
