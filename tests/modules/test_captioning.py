"""CaptionModel: teacher forcing, greedy decoding, learning, checkpoints; on tiny COCO-format data."""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from datamodules.coco_captions import CocoCaptionsDataModule
from modules.captioning import CaptionModel, CaptionModelError
from tests.coco_data import write_coco_captions
from tests.conftest import EpochHistory

WORDS = ["<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "square"]
TINY = {"cnn_channels": (8, 16, 32, 32), "embed_dim": 32, "hidden_dim": 64}
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}


def tiny_model(**kwargs) -> CaptionModel:
    return CaptionModel(**{"vocabulary": WORDS, **TINY, **kwargs})


def overfit_data(root: Path, n_images: int = 10) -> CocoCaptionsDataModule:
    """Training images that are also the validation images: BLEU then measures memorisation."""
    write_coco_captions(root, n_images=n_images)
    files = {"annotations": "annotations/captions_train.json", "images": "train"}
    return CocoCaptionsDataModule(
        str(root),
        **{f"{split}_{key}": value for split in ("train", "val") for key, value in files.items()},
        image_size=32,
        min_count=1,
        batch_size=n_images,
    )


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
def test_teacher_forcing_gives_logits_per_next_token_from_each_caption_image(rnn):
    model = tiny_model(rnn=rnn, num_layers=2).eval()
    images = torch.randn(2, 3, 32, 32)
    captions = torch.tensor([[1, 4, 5, 6, 2], [1, 4, 6, 2, 0], [1, 5, 2, 0, 0]])
    logits = model(images, captions, caption_image=torch.tensor([0, 0, 1]))
    assert logits.shape == (3, 4, len(WORDS))
    # Captions 0 and 1 share their image and their first input token, so their first step agrees;
    # caption 2 starts from the other image.
    torch.testing.assert_close(logits[0, 0], logits[1, 0])
    assert not torch.allclose(logits[0, 0], logits[2, 0])
    # The state comes from the image: the same caption on another image gives other logits.
    alone = model(images[1:], captions[:1])
    assert not torch.allclose(alone[0], logits[0])


def test_greedy_decoding_stops_at_eos():
    model = tiny_model(max_caption_length=8).eval()
    images = torch.randn(3, 3, 32, 32)
    assert model.head is not None
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.arange(len(WORDS)) == model.eos)
    tokens = model.generate(images)
    assert tokens.tolist() == [[model.eos]] * 3  # one step: every caption ended at once
    assert model.caption(images) == ["", "", ""]


def test_greedy_decoding_without_eos_stops_at_max_caption_length():
    model = tiny_model(max_caption_length=5).eval()
    assert model.head is not None
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([w == "red" for w in WORDS]))
    assert model.caption(torch.randn(2, 3, 32, 32)) == ["red red red red red"] * 2


def test_decode_cuts_each_row_at_its_own_eos():
    model = tiny_model()
    tokens = torch.tensor([[4, 5, 6, 2, 0], [5, 2, 0, 0, 0], [4, 3, 6, 6, 6]])
    assert model.decode(tokens) == ["a red square", "red", "a <unk> square square square"]


@pytest.mark.slow  # the longest test of its folder: left out of make test-fast
def test_it_learns_ten_images_by_heart(tmp_path):
    """The whole path: COCO JSON + JPEGs -> datamodule -> teacher forcing -> greedy captions, BLEU-4."""
    seed_everything(0)
    data = overfit_data(tmp_path)
    adam = functools.partial(torch.optim.Adam, lr=0.01)
    model = CaptionModel(**TINY, max_caption_length=12, optimizer=adam)
    history = EpochHistory()
    trainer = Trainer(
        max_epochs=100,
        check_val_every_n_epoch=100,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        callbacks=[history],
        **QUIET,
    )
    trainer.fit(model, data)
    assert history.values[-1] < 0.3 * history.values[0]
    assert trainer.callback_metrics["val/bleu4"] > 0.9
    # predict returns strings, each one of its image's references (the training captions, tokenised).
    captions = [c for batch in trainer.predict(model, data) for c in batch]
    references = next(iter(data.predict_dataloader()))["references"]
    assert len(captions) == 10
    assert sum(c in refs for c, refs in zip(captions, references, strict=True)) >= 9

    # The checkpoint carries the vocabulary: the model comes back and captions without any data.
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = CaptionModel.load_from_checkpoint(tmp_path / "model.ckpt")
    assert restored.vocabulary == data.vocabulary
    images = data.on_after_batch_transfer(next(iter(data.predict_dataloader())), 0)["images"]
    assert restored.eval().caption(images) == captions


def test_a_checkpoint_refuses_data_with_another_vocabulary(tmp_path):
    data = overfit_data(tmp_path / "a", n_images=3)
    model = CaptionModel(**TINY)
    trainer = Trainer(max_steps=1, num_sanity_val_steps=0, enable_checkpointing=False, **QUIET)
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    other = overfit_data(tmp_path / "b", n_images=8)  # more images, more words
    ours, theirs = len(data.vocabulary), len(other.vocabulary)
    message = rf"checkpoint's vocabulary \({ours} tokens\) differs from the data's \({theirs} tokens\)"
    with pytest.raises(CaptionModelError, match=message):
        Trainer(**QUIET).test(CaptionModel(**TINY), other, ckpt_path=tmp_path / "model.ckpt")


def test_without_a_vocabulary_setup_says_where_to_get_one():
    model = CaptionModel(**TINY)
    with pytest.raises(CaptionModelError, match="needs a vocabulary"):
        Trainer(**QUIET).predict(model, [torch.zeros(1, 3, 32, 32)])


def test_a_torchvision_encoder_loses_its_classification_head():
    model = tiny_model(encoder="resnet18", hidden_dim=16)
    features = model.encoder(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 512) and model.init_state.in_features == 512
    logits = model(torch.randn(2, 3, 64, 64), torch.tensor([[1, 4, 2], [1, 5, 2]]))
    assert logits.shape == (2, 2, len(WORDS))


def test_unknown_encoder_and_rnn_are_clear_errors():
    with pytest.raises(CaptionModelError, match='unknown encoder "resnet7"'):
        tiny_model(encoder="resnet7")
    with pytest.raises(CaptionModelError, match='rnn must be "gru" or "lstm"'):
        tiny_model(rnn="transformer")


def test_pretrained_weights_offline_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CaptionModelError, match=r"pretrained weights of resnet18.*--model\.pretrained false"):
        tiny_model(encoder="resnet18", pretrained=True)
