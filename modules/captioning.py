"""The 数据集 chapter's COCO captions put to use: a CNN encoder and a recurrent decoder that captions images.

Run:
    python -m experiments fit --config configs/coco_captions.yaml --data.data_dir <folder holding COCO>
    python -m experiments predict --config configs/coco_captions.yaml --ckpt_path best

The encoder (a small CNN, or a torchvision classification backbone without its head) turns an image into
one feature vector, which sets the decoder's initial state (GRU or LSTM). Training feeds the reference
caption in (teacher forcing) and scores each next word with cross-entropy; validation and test also
caption each image greedily and score it with BLEU-4 (torchmetrics) against all of its reference
captions. ``predict`` returns the greedy caption of each image, as strings. The ``CaptionSamples`` callback
draws a few validation images with their captions.

Batches are the dicts of ``CocoCaptionsDataModule`` (``images``, ``captions``, ``caption_image``,
``references``). The vocabulary (words by index, holding ``<pad> <bos> <eos> <unk>``) comes from the
datamodule's ``vocabulary`` when the model is set up, unless given; checkpoints carry it, so
``CaptionModel.load_from_checkpoint`` captions without any data, and a checkpoint whose vocabulary differs
from the data's is refused.

Departures from the tutorial: the chapter only loads COCO (``CocoCaptions`` with ``transforms.ToTensor()``)
and prints the sample count; it has no model. Its snippet does not run as written
(``import torchvision.dataset`` is ``torchvision.datasets``, and it prints a ``target`` it never
defines). This lesson keeps the loading (the datamodule uses ``CocoCaptions``) and adds the smallest model
that shows the data at work.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import Any, ClassVar, Literal
from urllib.error import URLError

import torch
import torch.nn.functional as F
import torchvision
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn
from torchmetrics.text import BLEUScore

from core.callbacks import ValidationSamples
from core.domains import Fraction, PositiveInt
from core.errors import ExperimentError
from core.figures import log_figure, new_figure
from core.metrics import EpochMean, log_phase, phase_metrics
from core.optim import LRSchedulerCallable, OptimizerCallable, optimizer_config
from modules.visualize import unnormalize

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class CaptionModelError(ExperimentError, ValueError):
    """A captioning setting that cannot work: unknown encoder, no vocabulary, a mismatched checkpoint."""


def small_cnn(channels: Sequence[int]) -> tuple[nn.Module, int]:
    """Stride-2 3x3 conv + batch norm + ReLU blocks, then global average pooling; and its output width."""
    layers: list[nn.Module] = []
    width = 3
    for c in channels:
        layers += [nn.Conv2d(width, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        width = c
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), width


def torchvision_backbone(name: str, pretrained: bool) -> tuple[nn.Module, int]:
    """A torchvision classification model with its last linear layer removed; and its output width."""
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise CaptionModelError(
            f'--model.encoder: unknown encoder "{name}": use "small" or a torchvision classification model '
            "such as resnet18, resnet50, mobilenet_v3_small, efficientnet_b0"
        )
    try:
        net = torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    except (URLError, OSError) as error:
        raise CaptionModelError(
            f"could not download the pretrained weights of {name} ({error}): run once with the internet "
            "(torch caches them in ~/.cache/torch/hub) or set --model.pretrained false"
        ) from error
    # The head is the last nn.Linear: `fc` (ResNet, RegNet...) or the end of `classifier` (MobileNet...).
    parent, key = None, None
    for module_name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            parent_name, _, key = module_name.rpartition(".")
            parent = net.get_submodule(parent_name) if parent_name else net
    if parent is None or key is None:
        raise CaptionModelError(f'encoder "{name}" has no linear head to remove; use a ResNet or MobileNet')
    width = getattr(parent, key).in_features
    setattr(parent, key, nn.Identity())
    return net, width


class CaptionModel(LightningModule):
    """Image -> feature -> initial state of a GRU/LSTM that writes the caption word by word.

    Args:
        vocabulary: Tokens by index, holding ``<pad> <bos> <eos> <unk>``; none takes the datamodule's.
        encoder: ``small`` (the CNN of ``cnn_channels``) or a torchvision model name (``resnet18``...).
        pretrained: Start a torchvision encoder from its ImageNet weights (downloaded once; online).
        cnn_channels: Output channels of the small CNN's stride-2 blocks (each a count >= 1).
        embed_dim: Size of the word embeddings (a count >= 1).
        hidden_dim: Size of the decoder's state (a count >= 1).
        rnn: ``gru`` or ``lstm``.
        num_layers: Stacked recurrent layers (a count >= 1).
        dropout: Dropout on the embeddings and the decoder's outputs, in [0, 1).
        max_caption_length: Greedy decoding stops after this many words if no ``<eos>`` came (a count
            >= 1).
        optimizer: Builds the optimizer from the parameters.
        lr_scheduler: Optional, builds a scheduler from the optimizer; stepped once per epoch.
    """

    #: Arguments that make the model small enough for tests' few steps (docs/architecture.md).
    small_args: ClassVar[dict[str, Any]] = {"embed_dim": 32, "hidden_dim": 64}
    #: Why ``python -m experiments export`` refuses it, and what it offers instead.
    export_unsupported = (
        "a caption is written by a greedy decoding loop whose length depends on the words it picks (up "
        "to --model.max_caption_length), not a fixed graph; use predict on the checkpoint, which writes "
        "the captions"
    )

    def __init__(
        self,
        vocabulary: list[str] | None = None,
        encoder: str = "small",
        pretrained: bool = False,
        cnn_channels: tuple[PositiveInt, ...] = (32, 64, 128, 256),
        embed_dim: PositiveInt = 256,
        hidden_dim: PositiveInt = 512,
        rnn: Literal["gru", "lstm"] = "gru",
        num_layers: PositiveInt = 1,
        dropout: Fraction = 0.0,
        max_caption_length: PositiveInt = 30,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        # The vocabulary travels in the checkpoint (on_save_checkpoint), not among the hyperparameters
        # that TensorBoard and hparams.yaml show: COCO's has thousands of words (2,338 from
        # captions_val2017.json alone at min_count 5).
        self.save_hyperparameters(ignore=["vocabulary", "optimizer", "lr_scheduler"])
        if rnn not in ("gru", "lstm"):
            raise CaptionModelError(f'rnn must be "gru" or "lstm", got "{rnn}"')
        if max_caption_length < 1:
            raise CaptionModelError(f"max_caption_length must be at least 1, got {max_caption_length}")
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        if encoder == "small":
            self.encoder, width = small_cnn(cnn_channels)
        else:
            self.encoder, width = torchvision_backbone(encoder, pretrained)
        self.rnn_type = rnn
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.max_caption_length = max_caption_length
        # An LSTM's state is (h, c): both come from the image.
        states = 2 if rnn == "lstm" else 1
        self.init_state = nn.Linear(width, states * num_layers * hidden_dim)
        rnn_class = nn.LSTM if rnn == "lstm" else nn.GRU
        self.decoder = rnn_class(embed_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.embed_dim = embed_dim
        # Built by set_vocabulary: their sizes are the vocabulary's.
        self.embedding: nn.Embedding | None = None
        self.head: nn.Linear | None = None
        self.vocabulary: list[str] | None = None
        if vocabulary is not None:
            self.set_vocabulary(vocabulary)
        self.train_loss, self.val_loss, self.test_loss = EpochMean(), EpochMean(), EpochMean()
        self.val_bleu4, self.test_bleu4 = BLEUScore(n_gram=4), BLEUScore(n_gram=4)

    # --- vocabulary -----------------------------------------------------------------------------------
    def set_vocabulary(self, vocabulary: Sequence[str]) -> None:
        """Build the word embedding and output layers for ``vocabulary`` (new weights)."""
        missing = [s for s in SPECIALS if s not in vocabulary]
        if missing:
            raise CaptionModelError(f"the vocabulary lacks the special tokens {' '.join(missing)}")
        self.vocabulary = list(vocabulary)
        self.pad, self.bos, self.eos = (self.vocabulary.index(s) for s in SPECIALS[:3])
        self.embedding = nn.Embedding(len(self.vocabulary), self.embed_dim, padding_idx=self.pad)
        self.head = nn.Linear(self.hidden_dim, len(self.vocabulary))

    def setup(self, stage: str) -> None:
        # Before the optimizer exists and before a checkpoint's weights are loaded.
        data = getattr(self.trainer, "datamodule", None)
        data_vocabulary = getattr(data, "vocabulary", None)
        if self.vocabulary is None:
            if data_vocabulary is None:
                raise CaptionModelError(
                    "CaptionModel needs a vocabulary: use a datamodule that has one "
                    "(CocoCaptionsDataModule) or pass --model.vocabulary"
                )
            self.set_vocabulary(data_vocabulary)
        elif data_vocabulary is not None and list(data_vocabulary) != self.vocabulary:
            raise CaptionModelError(self._mismatch("model's", len(self.vocabulary), len(data_vocabulary)))

    @staticmethod
    def _mismatch(whose: str, ours: int, data: int) -> str:
        return (
            f"the {whose} vocabulary ({ours} tokens) differs from the data's ({data} tokens): use the "
            "training annotations and min_count the model was trained with"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocabulary"] = self.vocabulary
        # The checkpoint's weights replace the pretrained ones, so rebuilding the model from it
        # (load_from_checkpoint) must not download them again, which would also fail offline.
        if "hyper_parameters" in checkpoint:
            checkpoint["hyper_parameters"]["pretrained"] = False

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs before the weights are loaded, in Trainer restores and in load_from_checkpoint alike.
        saved = checkpoint.get("vocabulary")
        if saved is None:
            return
        if self.vocabulary is None:
            self.set_vocabulary(saved)
        elif saved != self.vocabulary:
            # self.vocabulary came from the data in setup, which runs before this hook.
            raise CaptionModelError(self._mismatch("checkpoint's", len(saved), len(self.vocabulary)))

    # --- the network ----------------------------------------------------------------------------------
    def initial_state(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """The decoder's initial state ``(num_layers, B, hidden)`` (a pair for an LSTM) from the images."""
        state = torch.tanh(self.init_state(self.encoder(images)))
        state = state.view(len(images), -1, self.num_layers, self.hidden_dim).permute(1, 2, 0, 3)
        return (state[0].contiguous(), state[1].contiguous()) if self.rnn_type == "lstm" else state[0]

    @staticmethod
    def _select(state: Tensor | tuple[Tensor, Tensor], index: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if isinstance(state, tuple):
            return state[0][:, index], state[1][:, index]
        return state[:, index]

    def forward(self, images: Tensor, captions: Tensor, caption_image: Tensor | None = None) -> Tensor:
        """Teacher forcing: logits ``(N, T-1, V)`` of each next token of ``captions`` given the ones before.

        ``caption_image[n]`` is the image of caption ``n`` (default: caption n of image n). The padded
        tail needs no packing: a one-way RNN's outputs at real tokens never see the padding after them,
        and the loss ignores the padded targets.
        """
        assert self.embedding is not None and self.head is not None, "set_vocabulary first"
        state = self.initial_state(images)
        if caption_image is not None:
            state = self._select(state, caption_image)
        outputs, _ = self.decoder(self.dropout(self.embedding(captions[:, :-1])), state)
        return self.head(self.dropout(outputs))

    @torch.no_grad()
    def generate(self, images: Tensor) -> Tensor:
        """Greedy decoding: token ids ``(B, L)``, each row ending at its ``<eos>`` (then ``<pad>``), or
        at ``max_caption_length`` words; decoding stops as soon as every row has ended."""
        assert self.embedding is not None and self.head is not None, "set_vocabulary first"
        state = self.initial_state(images)
        token = torch.full((len(images),), self.bos, dtype=torch.long, device=images.device)
        ended = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        tokens = []
        for _ in range(self.max_caption_length):
            output, state = self.decoder(self.embedding(token[:, None]), state)
            token = self.head(output[:, 0]).argmax(dim=-1).masked_fill(ended, self.pad)
            tokens.append(token)
            ended |= token == self.eos
            if ended.all():
                break
        return torch.stack(tokens, dim=1)

    def decode(self, tokens: Tensor) -> list[str]:
        """Token ids -> caption strings: the words before the first ``<eos>``, specials dropped."""
        assert self.vocabulary is not None
        skip = {self.pad, self.bos}
        captions = []
        for row in tokens.tolist():
            row = row[: row.index(self.eos)] if self.eos in row else row
            captions.append(" ".join(self.vocabulary[i] for i in row if i not in skip))
        return captions

    def caption(self, images: Tensor) -> list[str]:
        """The greedy caption of each image, as a string."""
        return self.decode(self.generate(images))

    # --- the phases -----------------------------------------------------------------------------------
    def _loss(self, batch: dict[str, Any], phase: str) -> Tensor:
        captions = batch["captions"]
        logits = self(batch["images"], captions, batch["caption_image"])
        targets = captions[:, 1:]
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=self.pad)
        # Weighted by the number of real tokens, so the epoch value is the mean loss per word.
        getattr(self, f"{phase}_loss").update(loss.detach(), weight=(targets != self.pad).sum())
        return loss

    def _evaluate(self, batch: dict[str, Any], phase: str) -> list[str]:
        self._loss(batch, phase)
        captions = self.caption(batch["images"])
        getattr(self, f"{phase}_bleu4").update(captions, batch["references"])
        return captions

    def _log_phase(self, phase: str) -> None:
        log_phase(
            self, phase, phase_metrics(self, phase, ("loss",) if phase == "train" else ("loss", "bleu4"))
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._loss(batch, "train")

    def on_train_epoch_end(self) -> None:
        self._log_phase("train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> list[str]:
        return self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_phase("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> list[str]:
        return self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_phase("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[str]:
        return self.caption(batch["images"])

    def prediction_table(self, predictions: Any, datamodule: Any) -> dict[str, list[str]] | None:
        """``predict``'s captions, one string per image, as the ``caption`` column of ``predictions.csv``
        (``core.callbacks.PredictionWriter``)."""
        if not isinstance(predictions, list) or not all(isinstance(c, str) for c in predictions):
            return None
        return {"caption": predictions}

    def configure_optimizers(self) -> Any:
        return optimizer_config(self.parameters(), self.optimizer, self.lr_scheduler)


class CaptionSamples(ValidationSamples):
    """The first validation images with the caption the model wrote (greedy) and their first reference
    caption, after each validation epoch: ``val/captions`` and ``figures/val_captions.png`` (the last
    epoch's kept). On several processes each rank keeps the first of its shard and rank 0 draws the
    first ``num_images`` of the split, as one process would.

    Needs ``CaptionModel`` (its ``validation_step`` returns the captions) and batches of
    ``CocoCaptionsDataModule`` (whose ``mean_std`` undoes the images' normalisation).

    Args:
        num_images: Validation images to show (a count >= 1).
        columns: Images per row (a count >= 1).
    """

    def __init__(self, num_images: PositiveInt = 4, columns: PositiveInt = 2) -> None:
        super().__init__(num_images, columns)

    def keeps(self, outputs: Any) -> bool:
        return isinstance(outputs, list)  # CaptionModel's validation_step returns the captions

    def sample(self, batch: Any, outputs: Any) -> tuple[Tensor | list[Any], ...]:
        references = [refs[0] if refs else "" for refs in batch["references"]]
        return batch["images"], list(outputs), references

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        whole = self.take(trainer)  # every rank takes part
        if whole is None:
            return
        kept_images, kept_captions, kept_references = whole
        mean_std = getattr(getattr(trainer, "datamodule", None), "mean_std", None)
        images = unnormalize(kept_images.float(), mean_std)  # type: ignore[union-attr]
        captions, references = list(kept_captions), list(kept_references)
        # validate restores a checkpoint without its epoch count: only fit names one.
        when = f", epoch {trainer.current_epoch}" if trainer.state.fn == "fit" else ""
        columns_wanted = self.columns

        def draw() -> Any:
            count = len(images)
            cols = min(columns_wanted, count)
            rows = math.ceil(count / cols)
            figure = new_figure((2.9 * cols, 3.8 * rows + 0.4), layout="constrained")
            axes = figure.subplots(rows, cols, squeeze=False)
            for i, ax in enumerate(axes.flat):
                if i >= count:
                    ax.axis("off")
                    continue
                ax.imshow(images[i].permute(1, 2, 0).numpy())
                # Ticks and frame off, not axis("off"), which would hide the reference in the x label:
                # constrained layout makes room for labels, not for free text.
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.set_title(textwrap.fill(f"model: {captions[i] or '(empty)'}", 36), fontsize=9, loc="left")
                reference = textwrap.fill(f"reference: {references[i]}", 36)
                ax.set_xlabel(reference, fontsize=9, color="dimgray", loc="left")
            figure.suptitle(f"validation images{when}: greedy caption and a reference")
            return figure

        log_figure(trainer, draw, "val/captions", png_name="val_captions")
