"""What a word-embedding run shows and leaves behind (the 单词嵌入 lesson's callback): nearest neighbours,
TensorBoard's projector, and the vectors in word2vec's text format.

``WordEmbeddings`` needs a module with ``embeddings()``, ``nearest(ids, k)`` and
``save_embedding(words, path)`` (``SkipGramModel``) and a datamodule with ``words``, the vocabulary in id
order (``TextCorpusDataModule``). It draws and writes on global rank 0 only, from the weights every rank
holds alike, and communicates with no other rank.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from core.distributed import run_dir
from core.domains import NonNegativeInt, PositiveInt
from core.errors import ExperimentError


def neighbour_lines(pl_module: LightningModule, words: list[str], probes: list[str], k: int) -> list[str]:
    """One line per probe word in the vocabulary: ``word: neighbour (cosine), ...``."""
    index = {w: i for i, w in enumerate(words)}
    present = [w for w in probes if w in index]
    if not present:
        return []
    similarity, ids = pl_module.nearest(torch.tensor([index[w] for w in present]), k)
    lines = []
    for word, sims, nbrs in zip(present, similarity.tolist(), ids.tolist(), strict=True):
        lines.append(
            f"{word}: " + ", ".join(f"{words[j]} ({s:.2f})" for j, s in zip(nbrs, sims, strict=True))
        )
    return lines


class WordEmbeddings(Callback):
    """Nearest neighbours of probe words in TensorBoard (text) after each validation; at the end of
    training the most frequent words' vectors in TensorBoard's projector and, in the run folder,
    ``vectors.txt`` (word2vec text format) and ``neighbours.txt``; ``predict`` writes the same two files.

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

    def _write(self, trainer: Trainer, pl_module: LightningModule) -> None:
        folder = run_dir(trainer)
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        pl_module.save_embedding(self._words(trainer), folder / "vectors.txt")
        (folder / "neighbours.txt").write_text(self._text(trainer, pl_module) + "\n", encoding="utf-8")
        rank_zero_info(f"Word vectors written to {Path(folder) / 'vectors.txt'}")
