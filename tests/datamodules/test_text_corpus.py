"""TextCorpusDataModule: reading and tokenising, the vocabulary, subsampling and negative statistics,
windows and pairs against brute force, streaming in chunks, splits, the cache, download and errors."""

from __future__ import annotations

import math
import operator
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

import datamodules.corpus
import datamodules.text_corpus as text_corpus
from core.errors import DataConfigError, DataNotFoundError
from datamodules import TextCorpusDataModule
from datamodules.corpus import LINE_BREAK, read_pieces, sentence_ids, tokenize
from datamodules.skipgram_sampling import AliasTable, keep_probability, noise_distribution, skipgram_contexts
from tests.text_data import write_topics_corpus


def corpus(tmp_path: Path, text: str, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def data(path: Path, **kwargs) -> TextCorpusDataModule:
    kwargs.setdefault("min_count", 1)
    kwargs.setdefault("val_fraction", 0)
    kwargs.setdefault("test_fraction", 0)
    kwargs.setdefault("prefetch_batches", 0)
    return TextCorpusDataModule(path=str(path), **kwargs)


def all_batches(dm: TextCorpusDataModule, seed: int = 0) -> list:
    """One pass of the sampling over the whole encoded corpus, as one chunk."""
    words, sentences = dm.corpus.encoded()
    return list(dm.sampling.batches(words.long(), sentences.long(), torch.Generator().manual_seed(seed)))


def pair_multiset(batches) -> Counter:
    pairs: Counter = Counter()
    for center, context, _ in batches:
        for c, row in zip(center.tolist(), context.tolist(), strict=True):
            pairs.update((c, o) for o in row if o >= 0)
    return pairs


def test_tokenize_keeps_words_and_inner_apostrophes():
    assert tokenize("Don't stop: the KING's 2 men -- 'tis_done!") == [
        "don't",
        "stop",
        "the",
        "king's",
        "2",
        "men",
        "tis",
        "done",
    ]
    assert tokenize("Abc DEF", lowercase=False) == ["Abc", "DEF"]


def test_long_lines_are_read_in_pieces_without_cutting_words(tmp_path, monkeypatch):
    monkeypatch.setattr(datamodules.corpus, "BLOCK_CHARS", 16)
    words = [f"word{i}" for i in range(200)]
    path = corpus(tmp_path, " ".join(words[:150]) + "\n" + " ".join(words[150:]))  # no final newline
    pieces = list(read_pieces(path))
    assert max(len(text) for text, _ in pieces) <= 16 + 8
    assert [w for text, _ in pieces for w in text.split()] == words
    assert sum(ends for _, ends in pieces) == 2  # the two lines, the second ended by the file's end


def test_vocabulary_counts_order_and_min_count(tmp_path):
    path = corpus(tmp_path, "b a b c\nb a d\n\n")
    dm = data(path, min_count=2)
    assert dm.words == ["b", "a"] and dm.counts.tolist() == [3, 2] and dm.vocab_size == 2
    # Ties: first seen first.
    assert data(path).words == ["b", "a", "c", "d"]
    stream = dm.corpus.token_stream().tolist()
    assert stream.count(LINE_BREAK) == 4 and len(stream) == 11  # three lines, then the file's end


def test_folder_of_files_is_one_corpus_in_name_order(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    corpus(folder, "gamma delta", "b.txt")
    corpus(folder, "alpha beta", "a.txt")
    corpus(folder / "sub", "epsilon", "c.txt")
    corpus(folder, "hidden words", ".notes")
    dm = data(folder, sample=0)
    assert dm.words == ["alpha", "beta", "gamma", "delta", "epsilon"]
    # Each file ends a sentence: no window crosses from one file to the next.
    assert set(pair_multiset(all_batches(dm))) == {(0, 1), (1, 0), (2, 3), (3, 2)}


def test_keep_probability_is_mikolovs_formula():
    counts = torch.tensor([1000, 100, 10, 1])
    t = 0.01 * 1111
    expected = [min(1.0, (math.sqrt(c / t) + 1) * t / c) for c in counts.tolist()]
    assert torch.allclose(keep_probability(counts, 0.01), torch.tensor(expected))
    assert keep_probability(counts, 0.0).tolist() == [1.0] * 4


def test_subsampling_keeps_each_word_at_its_probability(tmp_path):
    rng = random.Random(1)
    words = [f"w{min(int(rng.expovariate(0.15)), 40)}" for _ in range(20_000)]
    dm = data(corpus(tmp_path, " ".join(words)), sample=1e-2, window=5)
    seen = torch.zeros(dm.vocab_size)
    epochs = 10
    for epoch in range(epochs):
        for center, _, _ in all_batches(dm, seed=epoch):
            seen += torch.bincount(center, minlength=dm.vocab_size)
    expected = dm.counts * dm.sampling.keep * epochs
    frequent = dm.counts >= 200
    assert (dm.sampling.keep[frequent] < 0.9).any()  # the test exercises subsampling
    assert torch.allclose(seen[frequent], expected[frequent].float(), rtol=0.06)


def test_negatives_follow_the_unigram_power_three_quarters(tmp_path):
    counts = torch.tensor([500, 200, 80, 20, 5, 1])
    weights = counts.double() ** 0.75
    assert torch.allclose(noise_distribution(counts), weights / weights.sum())
    table = AliasTable(noise_distribution(counts))
    draws = table.sample((200_000,), torch.Generator().manual_seed(0))
    observed = torch.bincount(draws, minlength=6).double() / len(draws)
    assert (observed - noise_distribution(counts)).abs().max() < 0.004
    # The datamodule's table is built from its vocabulary's counts.
    dm = data(write_topics_corpus(tmp_path / "topics.txt"))
    draws = dm.sampling.noise.sample((100_000,), torch.Generator().manual_seed(1))
    observed = torch.bincount(draws, minlength=dm.vocab_size).double() / len(draws)
    assert (observed - noise_distribution(dm.counts)).abs().max() < 0.006


def brute_force_contexts(words: list[int], sentences: list[int], reduced: list[int], window: int):
    out = []
    for i, (s, b) in enumerate(zip(sentences, reduced, strict=True)):
        row = []
        for offset in [*range(-window, 0), *range(1, window + 1)]:
            j = i + offset
            ok = 0 <= j < len(words) and abs(offset) <= b and sentences[j] == s
            row.append(words[j] if ok else -1)
        out.append(row)
    return out


def test_dynamic_windows_against_brute_force():
    rng = random.Random(0)
    n, window = 300, 4
    words = [rng.randrange(50) for _ in range(n)]
    sentences = sorted(rng.randrange(12) for _ in range(n))
    reduced = [rng.randint(1, window) for _ in range(n)]
    contexts = skipgram_contexts(torch.tensor(words), torch.tensor(sentences), torch.tensor(reduced), window)
    assert contexts.tolist() == brute_force_contexts(words, sentences, reduced, window)


def test_batches_hold_exactly_the_pairs_of_the_text(tmp_path):
    # With no subsampling and window 2, the windows are the reduced window 1 or 2; draw both: the pairs
    # at distance 1 are always there, those at distance 2 for the centers that drew 2.
    text = "a b c rare d\ne f\ng\nh a b c d e f g h\n"
    dm = data(corpus(tmp_path, text), min_count=2, sample=0, window=2, batch_size=3)
    index = {w: i for i, w in enumerate(dm.words)}
    batches = all_batches(dm)
    pairs = pair_multiset(batches)
    sentences = [[index[w] for w in line.split() if w in index] for line in text.splitlines()]
    near = Counter()
    far = Counter()
    for s in sentences:  # "rare" (once) is dropped before windows: b and d become neighbours
        for i, c in enumerate(s):
            near.update((c, s[j]) for j in (i - 1, i + 1) if 0 <= j < len(s))
            far.update((c, s[j]) for j in (i - 2, i + 2) if 0 <= j < len(s))
    assert near <= pairs and pairs <= near + far
    assert pairs - near  # some centers drew window 2
    # "g" alone on its line has no pair and is no center; every other word is a center once.
    centers = Counter(c for center, _, _ in batches for c in center.tolist())
    assert sum(centers.values()) == sum(len(s) for s in sentences) - 1
    for center, context, negatives in batches:
        valid = context >= 0
        assert len(center) <= 3 and negatives.shape == (len(center), 5)
        assert (negatives != center.unsqueeze(1)).all()  # drawn again where word2vec.c skips
        assert valid[:, 0].all()  # contexts from the first column, no empty row
        assert (valid.int().diff(dim=1) <= 0).all()  # then only empty slots
        assert valid.sum(1).max() == context.shape[1]  # a batch is as wide as its widest row


def test_sentence_numbers_of_a_stream_read_in_pieces_equal_those_of_the_whole():
    rng = random.Random(2)
    tokens = torch.tensor([LINE_BREAK if rng.random() < 0.05 else rng.randrange(9) for _ in range(500)])
    whole, _ = sentence_ids(tokens, 7)
    pieces, last_break, first = [], -1, 0
    for piece in tokens.split(37):
        numbers, last_break = sentence_ids(piece, 7, last_break, first)
        first = int(numbers[-1])
        pieces.append(numbers)
    assert torch.equal(torch.cat(pieces), whole)
    # Brute force: a new sentence at each line break and after every 7 words of a line.
    expected, number, run = [], 0, 0
    for token in tokens.tolist():
        if token == LINE_BREAK:
            number, run = number + 1, 0
        else:
            if run and run % 7 == 0:
                number += 1
            run += 1
        expected.append(number)
    assert whole.tolist() == expected


def test_long_lines_are_cut_into_sentences(tmp_path):
    dm = data(corpus(tmp_path, " ".join("abcdefghij")), sample=0, window=3, max_sentence_length=5)
    pairs = pair_multiset(all_batches(dm))
    index = {w: i for i, w in enumerate(dm.words)}
    assert (index["e"], index["f"]) not in pairs and (index["d"], index["e"]) in pairs


def test_streaming_in_chunks_covers_the_corpus(tmp_path):
    path = write_topics_corpus(tmp_path / "topics.txt", lines=60)
    whole = data(path, sample=0, batch_size=64)
    chunked = data(path, sample=0, batch_size=64, chunk_tokens=50)
    assert sum(1 for _ in chunked.train_dataloader()) > sum(1 for _ in whole.train_dataloader())
    centers = [sum(len(b[0]) for b in dm.train_dataloader()) for dm in (whole, chunked)]
    # Windows are cut at chunk edges, so a few words at an edge may lose all their contexts.
    assert centers[0] * 0.95 < centers[1] <= centers[0]


def test_epochs_draw_anew_and_evaluation_is_fixed(tmp_path):
    dm = data(
        write_topics_corpus(tmp_path / "topics.txt"), val_fraction=0.2, test_fraction=0.2, batch_size=32
    )
    bounds = dm._bounds()
    assert bounds["train"][1] == bounds["val"][0] and bounds["val"][1] == bounds["test"][0]
    assert bounds["test"][1] == dm.corpus.corpus_words == int(dm.counts.sum())
    train = dm.train_dataloader()
    first = [b[0] for b in train]
    train.set_epoch(1)
    assert [b[0] for b in train] != first
    val = dm.val_dataloader()
    once = [tuple(t.clone() for t in b) for b in val]
    val.set_epoch(3)
    assert all(
        all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) for a, b in zip(once, val, strict=True)
    )
    assert operator.length_hint(val) > 0 and operator.length_hint(dm.test_dataloader()) > 0
    assert torch.equal(next(iter(dm.predict_dataloader()))[0], torch.arange(dm.vocab_size))


def test_background_thread_yields_the_same_batches(tmp_path):
    path = write_topics_corpus(tmp_path / "topics.txt")
    inline = data(path, batch_size=16).train_dataloader()
    threaded = data(path, batch_size=16, prefetch_batches=2).train_dataloader()
    pairs = list(zip(inline, threaded, strict=True))
    assert len(pairs) > 10
    assert all(torch.equal(a, b) for x, y in pairs for a, b in zip(x, y, strict=True))
    iterator = iter(threaded)
    next(iterator)
    iterator.close()  # a consumer that stops early stops the thread


def test_next_epoch_is_made_ahead_and_dropped_when_not_asked_for(tmp_path):
    path = write_topics_corpus(tmp_path / "topics.txt")
    inline = data(path, batch_size=16).train_dataloader()
    expected = {epoch: [b[0].tolist() for b in inline.batches(epoch)] for epoch in (0, 1, 2, 5)}
    loader = data(path, batch_size=16, prefetch_batches=2)._batches("train")
    loader.last_epoch = 2
    loader.prefetch(0)  # what train_dataloader() does while Lightning sets up
    first = loader._next  # (epoch, its producer)
    assert first is not None and first[0] == 0
    assert [b[0].tolist() for b in loader] == expected[0]
    first[1].join(timeout=10)  # once epoch 0 was all made, its thread started epoch 1
    second = loader._next
    assert second is not None and second[0] == 1
    loader.set_epoch(1)
    assert [b[0].tolist() for b in loader] == expected[1]
    second[1].join(timeout=10)
    made_ahead = loader._next
    assert made_ahead is not None and made_ahead[0] == 2
    # A resumed run asks for another epoch: the one made ahead is dropped, not served.
    loader.set_epoch(5)
    assert [b[0].tolist() for b in loader] == expected[5]
    made_ahead[1].join(timeout=10)
    assert not made_ahead[1].is_alive()
    assert loader._next is None  # nothing is made past the last epoch
    loader.set_epoch(2)
    assert [b[0].tolist() for b in loader] == expected[2]


def test_teardown_stops_an_epoch_made_ahead(tmp_path):
    dm = data(write_topics_corpus(tmp_path / "topics.txt"), batch_size=16, prefetch_batches=1)
    loader = dm.train_dataloader()
    assert loader._next is None  # without a trainer there is no epoch to make ahead
    loader.last_epoch = 3
    loader.prefetch(0)
    ahead = loader._next
    assert ahead is not None and ahead[0] == 0
    dm.teardown("fit")
    ahead[1].join(timeout=10)
    assert not ahead[1].is_alive() and loader._next is None


def test_fit_setup_starts_the_first_epoch_and_hands_that_loader_over(tmp_path):
    from lightning.pytorch import Trainer

    dm = data(write_topics_corpus(tmp_path / "topics.txt"), batch_size=16, prefetch_batches=1)
    dm.trainer = Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    dm.setup("fit")
    started = dm._train
    assert started._next is not None and started._next[0] == 0 and started.last_epoch == 1
    assert dm.train_dataloader() is started
    again = dm.train_dataloader()  # asked again (reload_dataloaders_every_n_epochs): a new loader
    assert again is not started and started._next is None
    dm.teardown("fit")
    assert again._next is None


def test_epochs_have_no_len_but_a_length_hint_near_their_draws(tmp_path):
    # Given a len(), Lightning ends an epoch after that many batches and validates only when it gets
    # there; subsampling draws each epoch's count, so the loader is unsized and read to its end.
    dm = data(write_topics_corpus(tmp_path / "topics.txt", lines=2000), sample=1e-2, batch_size=16)
    loader = dm.train_dataloader()
    with pytest.raises(TypeError):
        len(loader)
    made = [sum(1 for _ in loader.batches(epoch)) for epoch in range(6)]
    assert len(set(made)) > 1  # subsampling draws how many there are
    assert abs(operator.length_hint(loader) - sum(made) / len(made)) <= 0.05 * max(made)


def test_cache_dir_keeps_the_token_file_for_the_next_run(tmp_path):
    path = write_topics_corpus(tmp_path / "topics.txt")
    first = data(path, cache_dir=str(tmp_path / "cache"))
    first.prepare()
    files = sorted((tmp_path / "cache").iterdir())
    assert [f.suffix for f in files] == [".encoded", ".tokens", ".tsv"]
    stamps = [f.stat().st_mtime_ns for f in files]
    second = data(path, cache_dir=str(tmp_path / "cache"))
    assert second.words == first.words
    assert torch.equal(second.corpus.token_stream(), first.corpus.token_stream())
    assert [f.stat().st_mtime_ns for f in files] == stamps
    path.write_text("other words entirely\n", encoding="utf-8")  # a changed file is read again
    assert data(path, cache_dir=str(tmp_path / "cache")).words == ["other", "words", "entirely"]


def test_download_fetches_text8(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, download_root):
        calls.append(url)
        Path(download_root).mkdir(parents=True, exist_ok=True)
        (Path(download_root) / "text8").write_text(" anarchism originated as a term", encoding="utf-8")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fake_download)
    dm = data(tmp_path / "data" / "text8", download=True)
    dm.prepare_data()
    assert calls == [text_corpus.TEXT8_URL]
    assert dm.words[:2] == ["anarchism", "originated"]
    dm.prepare_data()  # present: nothing fetched again
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("setup", "error", "message"),
    [
        (lambda p: p / "absent.txt", DataNotFoundError, "corpus not found: path="),
        (lambda p: (p / "empty").mkdir() or p / "empty", DataNotFoundError, "holds no files"),
        (lambda p: corpus(p, " -- ... !!\n\n"), DataConfigError, "holds no words"),
        (lambda p: corpus(p, "a b a"), DataConfigError, "min_count=3 leaves no word"),
        (
            lambda p: (p / "bin.txt").write_bytes(b"ab\xff\xfe") and p / "bin.txt",
            DataConfigError,
            "not UTF-8",
        ),
    ],
)
def test_clear_errors(tmp_path, setup, error, message):
    dm = data(setup(tmp_path), min_count=3)
    with pytest.raises(error, match=message) as info:
        dm.prepare()
    assert "\n" not in str(info.value)


def test_missing_corpus_message_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data(tmp_path / "text8").prepare()
    assert "--data.download true" in str(info.value) and "--data.path" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample": 1.5}, "sample must be in"),
        ({"window": 0}, "window must be at least 1"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "leave part of the corpus"),
    ],
)
def test_impossible_settings(tmp_path, kwargs, message):
    with pytest.raises(DataConfigError, match=message):
        data(tmp_path / "x.txt", **kwargs)
