"""A plain-text corpus read once into vocabulary ids (单词嵌入's data, before any sampling).

What word2vec.c and gensim do to a corpus before training, in their order:
1. tokenise (here: lower-cased runs of letters and digits, with inner apostrophes: "don't"); a line is a
   sentence (windows never cross a line break), and a line longer than ``max_sentence_length`` words is
   cut, as gensim cuts text8's one 17-million-word line;
2. keep words seen at least ``min_count`` times; the others are dropped before windows are drawn.

``EncodedCorpus`` reads the text once: one pass tokenises and counts it and writes the token stream
(int32 ids in order of first sight, line breaks marked) to a file; once the vocabulary is known, a
second pass over that file writes the encoded corpus, each in-vocabulary word as its vocabulary id and
sentence number. Both files are mapped, not read into memory, so a corpus larger than memory trains. In
a cache folder they are named after what determines them, so a later run over the same unchanged files
reuses them.
"""

from __future__ import annotations

import codecs
import hashlib
import re
import shutil
import tempfile
import weakref
from array import array
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from core.errors import DataConfigError

TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
#: the token stream's marker of a line break (a sentence end)
LINE_BREAK = -1
#: characters read at a time from a line: text8 is one line of 100 MB
BLOCK_CHARS = 1 << 22


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """The words of ``text``: runs of letters and digits, with apostrophes inside a word kept."""
    return TOKEN.findall(text.lower() if lowercase else text)


def corpus_files(path: Path) -> list[Path]:
    """``path`` itself, or the files under the folder ``path`` (sorted; hidden ones left out)."""
    if path.is_file():
        return [path]
    return [
        p
        for p in sorted(path.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    ]


def read_pieces(file: Path) -> Iterator[tuple[str, bool]]:
    """``(text, ends_line)`` pieces of a file, at most ``BLOCK_CHARS`` long, never cutting a word."""
    carry = ""
    with open(file, encoding="utf-8") as handle:
        while piece := handle.readline(BLOCK_CHARS):
            text = carry + piece
            if piece.endswith("\n"):
                carry = ""
                yield text, True
                continue
            # A long line: the word at the end may go on in the next piece.
            cut = max(text.rfind(" "), text.rfind("\t"))
            carry, text = (text[cut + 1 :], text[: cut + 1]) if cut >= 0 else (text, "")
            if text:
                yield text, False
    yield carry, True  # the file's end ends a sentence, with or without a final newline


def first_bad_utf8(file: Path, chunk: int = 1 << 20) -> tuple[int, int, str]:
    """``(byte offset, line number, reason)`` of a file's first byte that is not UTF-8, read in chunks
    so a large corpus is never held whole."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = lines = 0
    with open(file, "rb") as handle:
        while data := handle.read(chunk):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(data)
            except UnicodeDecodeError as error:
                # error.start counts from the bytes held over from the last chunk (part of a character,
                # so no newline among them).
                at = error.start - len(pending)
                return consumed + at, lines + data.count(b"\n", 0, max(at, 0)) + 1, error.reason
            consumed += len(data)
            lines += data.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        return consumed - len(decoder.getstate()[0]) + error.start, lines + 1, error.reason
    return consumed, lines + 1, "no error"


def read_words_file(path: Path) -> tuple[list[str], list[int]]:
    """A cache folder's word list (a word, a tab and its count a line), checked as it is read: a line
    that is not one refuses the file with its 1-based line number (a damaged or foreign file)."""
    seen, counts = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        word, _, count = line.rpartition("\t")
        if not word or not count.isdigit():
            raise DataConfigError(
                f"{path}, line {number}: {line[:40]!r} is not a word, a tab and a count: the cache file is "
                "damaged; delete it and run again"
            )
        seen.append(word)
        counts.append(int(count))
    return seen, counts


def whole_records(path: Path, size: int) -> int:
    """How many ``size``-byte records ``path`` holds; a file cut inside one (a damaged cache) is refused."""
    length = path.stat().st_size
    if length % size:
        raise DataConfigError(
            f"{path} holds {length} bytes, not a whole number of {size}-byte records: the cache file is "
            "damaged; delete it and run again"
        )
    return length // size


def check_encoded(corpus: EncodedCorpus, ids: Tensor, sentences: Tensor) -> None:
    """Check an encoded corpus against its vocabulary, in vectorised passes over the mapped file: every
    id within ``0..len(words) - 1``, every word as frequent as ``counts`` says, sentence numbers never
    decreasing. Files found in a cache folder that fail are stale or damaged; the error names them.
    ``ids`` and ``sentences`` are ``corpus.encoded()``, read once by the caller."""
    size = len(corpus.words)
    where = str(corpus.encoded_path)
    fix = "the cache's files disagree (stale or damaged); delete them and run again"
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= size):
        at = int(((ids < 0) | (ids >= size)).nonzero()[0])
        raise DataConfigError(
            f"{where}: word {at} (counting from 0) has id {int(ids[at])}, outside the vocabulary's "
            f"0..{size - 1} ({corpus.words_path}): {fix}"
        )
    found = torch.bincount(ids, minlength=size) if len(ids) else torch.zeros(size, dtype=torch.long)
    if not torch.equal(found, corpus.counts):
        word = int((found != corpus.counts).nonzero()[0])
        raise DataConfigError(
            f"{where}: {corpus.words[word]!r} occurs {int(found[word])} times, but {corpus.words_path} "
            f"counts {int(corpus.counts[word])}: {fix}"
        )
    if len(sentences) > 1 and bool((sentences[1:] < sentences[:-1]).any()):
        at = int((sentences[1:] < sentences[:-1]).nonzero()[0]) + 1
        raise DataConfigError(
            f"{where}: word {at} (counting from 0) has sentence number {int(sentences[at])}, below the one "
            f"before it ({int(sentences[at - 1])}): {fix}"
        )


def sentence_ids(
    tokens: Tensor, max_sentence_length: int, last_break: int = -1, first: int = 0
) -> tuple[Tensor, int]:
    """A sentence number per token of a stream where ``LINE_BREAK`` ends a sentence, and a sentence is
    also cut after every ``max_sentence_length`` tokens (line breaks get numbers of their own).

    For a stream read in pieces: ``last_break`` is the position of the last line break before this
    piece, counted from the piece's start (so negative), and ``first`` the number its first sentence
    continues. Returns the numbers and the ``last_break`` for the next piece.
    """
    breaks = tokens == LINE_BREAK
    index = torch.arange(len(tokens))
    last = torch.cummax(torch.where(breaks, index, last_break), 0).values
    position = index - last - 1  # within the line
    cut = (position > 0) & (position % max_sentence_length == 0) & ~breaks
    numbers = first + torch.cumsum((breaks | cut).long(), 0)
    return numbers, (int(last[-1]) if len(tokens) else last_break) - len(tokens)


class EncodedCorpus:
    """The words of ``files`` as vocabulary ids with their sentence numbers, and the vocabulary.

    Args:
        files: The corpus's UTF-8 text files, read in this order.
        name: How error messages name the corpus (its path as the user gave it).
        lowercase: Lower-case the text before tokenising.
        min_count: Words seen fewer times are left out of the vocabulary and of the encoded corpus.
        max_sentence_length: Longest sentence in words; longer lines are cut.
        chunk_tokens: Tokens encoded at a time (bounds the memory of the second pass).
        cache_dir: Where the token and encoded files go. None: a temporary folder, removed with this
            object; a folder: kept, and reused by later runs over the same unchanged files.
    """

    def __init__(
        self,
        files: list[Path],
        name: str,
        lowercase: bool = True,
        min_count: int = 5,
        max_sentence_length: int = 10_000,
        chunk_tokens: int = 1 << 17,
        cache_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.lowercase = lowercase
        self.min_count = min_count
        self.max_sentence_length = max_sentence_length
        self.chunk_tokens = chunk_tokens
        tokens_path, words_path = self._token_files(files, cache_dir)
        self.words_path = words_path
        if tokens_path.is_file() and words_path.is_file():
            seen, seen_counts = read_words_file(words_path)
        else:
            seen, seen_counts = self._write_token_file(files, tokens_path)
            partial = words_path.with_suffix(".partial")
            partial.write_text(
                "".join(f"{w}\t{c}\n" for w, c in zip(seen, seen_counts, strict=True)), encoding="utf-8"
            )
            partial.replace(words_path)  # complete or absent, for a later run that reuses it
        #: words and line breaks in the token file
        self.raw_tokens = whole_records(tokens_path, 4)
        self._tokens_path = tokens_path
        self._build_vocabulary(seen, torch.tensor(seen_counts, dtype=torch.long))
        self.encoded_path = tokens_path.with_name(
            f"{tokens_path.stem}.min{min_count}.len{max_sentence_length}.encoded"
        )
        if not self.encoded_path.is_file():
            self._encode()
        #: in-vocabulary words of the corpus, each stored with its sentence number
        self.corpus_words = whole_records(self.encoded_path, 8)

    def _cache_key(self, files: list[Path]) -> str:
        """Names the token file after what determines it: the files (name, size, time) and tokenising."""
        digest = hashlib.sha256(f"v1 lowercase={self.lowercase}".encode())
        for file in files:
            stat = file.stat()
            digest.update(f"{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        return digest.hexdigest()[:20]

    def _token_files(self, files: list[Path], cache_dir: Path | None) -> tuple[Path, Path]:
        if cache_dir is None:
            folder = Path(tempfile.mkdtemp(prefix="text_corpus_"))
            weakref.finalize(self, shutil.rmtree, folder, ignore_errors=True)
        else:
            folder = cache_dir
            folder.mkdir(parents=True, exist_ok=True)
        key = self._cache_key(files)
        return folder / f"{key}.tokens", folder / f"{key}.words.tsv"

    def _write_token_file(self, files: list[Path], tokens_path: Path) -> tuple[list[str], list[int]]:
        """One pass: every word gets an id in order of first sight; the ids go to ``tokens_path``."""
        index: dict[str, int] = {}
        counts: Counter[str] = Counter()
        partial = tokens_path.with_suffix(".partial")
        with open(partial, "wb") as out:
            for file in files:
                try:
                    for text, ends_line in read_pieces(file):
                        words = tokenize(text, self.lowercase)
                        counts.update(words)
                        for word in words:
                            if word not in index:
                                index[word] = len(index)
                        ids = array("i", map(index.__getitem__, words))
                        if ends_line:
                            ids.append(LINE_BREAK)
                        ids.tofile(out)
                except UnicodeDecodeError as error:
                    # The error's offset counts from the decoder's buffer; find the byte in the file.
                    byte, line, reason = first_bad_utf8(file)
                    raise DataConfigError(
                        f"{file} is not UTF-8 text ({reason} at byte {byte}, line {line}): "
                        "convert it (iconv -t UTF-8) or leave it out of the corpus"
                    ) from error
        partial.replace(tokens_path)
        seen = list(index)
        return seen, [counts[w] for w in seen]

    def _build_vocabulary(self, seen: list[str], seen_counts: Tensor) -> None:
        if int(seen_counts.sum()) == 0:
            raise DataConfigError(f"the corpus at path={self.name} holds no words: give it some text")
        # Most frequent first (ties: first seen first), as gensim sorts; rare words dropped.
        order = sorted(range(len(seen)), key=lambda i: (-int(seen_counts[i]), i))
        order = [i for i in order if seen_counts[i] >= self.min_count]
        if not order:
            raise DataConfigError(
                f"min_count={self.min_count} leaves no word in the vocabulary (the most frequent word occurs "
                f"{int(seen_counts.max())} times): lower --data.min_count or use a larger corpus"
            )
        if len(order) < 2:
            # One word has no context to tell it from: every pair and every negative would be itself.
            raise DataConfigError(
                f"min_count={self.min_count} leaves one word in the vocabulary ({seen[order[0]]!r}): "
                "a skip-gram model needs at least two; lower --data.min_count or use a larger corpus"
            )
        #: the vocabulary, most frequent first: ``words[i]`` is the word of id ``i``
        self.words = [seen[i] for i in order]
        #: how often each vocabulary word occurs in the corpus
        self.counts = seen_counts[order]
        # Token file ids (order of first sight) -> vocabulary ids; -1 for words left out.
        self._vocab_of = torch.full((len(seen),), -1, dtype=torch.long)
        self._vocab_of[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))

    def _encode(self) -> None:
        """The token file as vocabulary ids and sentence numbers, rare words and line breaks left out:
        what every epoch starts from, computed once. Written as int32 pairs, a chunk at a time."""
        stream = self.token_stream()
        partial = self.encoded_path.with_suffix(".partial")
        last_break, first = -1, 0
        with open(partial, "wb") as out:
            for begin in range(0, len(stream), self.chunk_tokens):
                chunk = stream[begin : begin + self.chunk_tokens].long()
                # A token file found in a cache folder may not match its word list (a damaged file):
                # an id outside it is refused here, by a min and a max per chunk, not as an IndexError.
                if len(chunk) and (int(chunk.min()) < LINE_BREAK or int(chunk.max()) >= len(self._vocab_of)):
                    bad = (chunk < LINE_BREAK) | (chunk >= len(self._vocab_of))
                    at = begin + int(bad.nonzero()[0])
                    partial.unlink(missing_ok=True)
                    raise DataConfigError(
                        f"{self._tokens_path}: token {at} (counting from 0) is id {int(stream[at])}, but "
                        f"{self.words_path} lists {len(self._vocab_of)} words: the cache's files disagree; "
                        "delete them and run again"
                    )
                sentences, last_break = sentence_ids(chunk, self.max_sentence_length, last_break, first)
                first = int(sentences[-1])
                words = self._vocab_of[chunk.clamp(min=0)]
                kept = (words >= 0) & (chunk != LINE_BREAK)
                pairs = torch.stack([words[kept], sentences[kept]], dim=1).to(torch.int32)
                out.write(pairs.numpy().tobytes())
        partial.replace(self.encoded_path)

    def token_stream(self) -> Tensor:
        """The corpus as int32 ids in order of first sight, ``LINE_BREAK`` between lines; mapped from the
        token file, not read into memory."""
        if self.raw_tokens == 0:
            return torch.empty(0, dtype=torch.int32)
        return torch.from_file(str(self._tokens_path), shared=False, size=self.raw_tokens, dtype=torch.int32)

    def encoded(self) -> tuple[Tensor, Tensor]:
        """The in-vocabulary words as vocabulary ids, and their sentence numbers (int32 views of the
        encoded file, mapped, not read into memory)."""
        if self.corpus_words == 0:
            empty = torch.empty(0, dtype=torch.int32)
            return empty, empty
        pairs = torch.from_file(
            str(self.encoded_path), shared=False, size=2 * self.corpus_words, dtype=torch.int32
        ).view(-1, 2)
        return pairs[:, 0], pairs[:, 1]
