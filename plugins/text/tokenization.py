"""Tokenisers: a WordPiece/BPE tokenizer from local ``tokenizers`` files, and a word-level vocabulary built from
the corpus (Diffusion-LM's E2E setting, Li et al. 2022, §7.1: words split on spaces, one id per word).

Both share one small interface, :class:`Tokenizer`: ``encode(text) -> list[int]`` (no special tokens),
``decode(ids) -> str`` (special tokens dropped), ``vocab_size``, the ids of ``[PAD]``/``[UNK]``/``[BOS]``/``[EOS]``
(as the vocabulary has them), ``state()`` (plain data for checkpoints) and :func:`tokenizer_from_state`.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from polydiff.errors import ConfigError, DataError

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


class Tokenizer(ABC):
    """Interface shared by :class:`WordVocab` and :class:`WordPiece`."""

    kind = ""
    pad_id: int
    unk_id: int
    bos_id: int | None
    eos_id: int | None

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        ...

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        ...

    @abstractmethod
    def state(self) -> dict:
        ...


class WordVocab(Tokenizer):
    """Word-level vocabulary: ``[PAD] [UNK] [BOS] [EOS]`` then the corpus words (by falling count, ties in first
    appearance order) seen at least ``min_count`` times; text is split on whitespace (E2E is pre-tokenised),
    lower-cased if ``lower``. Unknown words map to ``[UNK]``."""

    kind = "word"

    def __init__(self, words: Sequence[str], lower: bool = False):
        words = list(words)
        if list(words[:len(SPECIALS)]) != list(SPECIALS):
            words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(set(words)) != len(words):
            raise DataError("a word vocabulary holds each word once")
        self.words, self.lower = words, lower
        self.index = {w: i for i, w in enumerate(words)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (self.index[s] for s in SPECIALS)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, lower: bool = False) -> "WordVocab":
        if min_count < 1:
            raise ConfigError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(w for t in texts for w in (t.lower() if lower else t).split())
        words = [w for w, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_count]
        return cls(list(SPECIALS) + words, lower)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, self.unk_id) for w in (text.lower() if self.lower else text).split()]

    def decode(self, ids: Iterable[int]) -> str:
        special = {self.pad_id, self.bos_id, self.eos_id}
        return " ".join(self.words[i] for i in map(int, ids) if i not in special and 0 <= i < len(self.words))

    def state(self) -> dict:
        return {"kind": self.kind, "words": list(self.words), "lower": self.lower}


class WordPiece(Tokenizer):
    """A ``tokenizers`` tokenizer (WordPiece, BPE, …) from a ``tokenizer.json`` file or a folder holding one,
    e.g. ``../shared/data/text/tokenizer_bert_uncased`` (BERT's uncased WordPiece, 30,522 entries). Read
    locally; nothing is downloaded. ``[CLS]``/``[SEP]`` serve as begin/end markers when there is no
    ``[BOS]``/``[EOS]``."""

    kind = "tokenizers"

    def __init__(self, path: str | Path | None = None, json_text: str | None = None):
        from tokenizers import Tokenizer as HFTokenizer

        if (path is None) == (json_text is None):
            raise ConfigError("give a tokenizer path or its JSON text")
        if path is not None:
            p = Path(path)
            p = p / "tokenizer.json" if p.is_dir() else p
            if not p.is_file():
                raise ConfigError(f"tokenizer file {p} does not exist (expected a tokenizers tokenizer.json)")
            json_text = p.read_text(encoding="utf-8")
        try:
            self.tok = HFTokenizer.from_str(json_text)
        except Exception as exc:  # the library raises its own exception types for a bad file
            raise DataError(f"tokenizer {path or '<json>'} is not a valid tokenizers file: {exc}") from None
        self.json_text = json_text
        self.tok.no_padding()
        self.tok.no_truncation()
        vocab = self.tok.get_vocab()

        def first(*names):
            return next((vocab[n] for n in names if n in vocab), None)

        self.pad_id, self.unk_id = first("[PAD]", "<pad>"), first("[UNK]", "<unk>")
        self.bos_id, self.eos_id = first("[BOS]", "<s>", "[CLS]"), first("[EOS]", "</s>", "[SEP]")
        if self.pad_id is None:
            raise DataError(f"tokenizer {path or '<json>'} has no [PAD] token")
        self.special_ids = set(self.tok.get_vocab().values()) & {i for i in (self.pad_id, self.bos_id, self.eos_id)
                                                                 if i is not None}

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size())

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids if int(i) not in self.special_ids])

    def state(self) -> dict:
        return {"kind": self.kind, "json": self.json_text}


def tokenizer_from_state(state: dict) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.state` (plain data, as stored in checkpoints)."""
    if not isinstance(state, dict) or state.get("kind") not in ("word", "tokenizers"):
        raise DataError(f"not a tokenizer state: {str(state)[:80]!r}")
    if state["kind"] == "word":
        return WordVocab(state["words"], bool(state.get("lower", False)))
    return WordPiece(json_text=state["json"])


def load_tokenizer(spec: str, texts: Iterable[str] | None = None, min_count: int = 1) -> Tokenizer:
    """``"word"`` (a vocabulary built from ``texts``), a path to a ``tokenizer.json``/folder, or a vocabulary
    saved by :meth:`WordVocab.state` as JSON (``{"kind": "word", "words": [...]}``)."""
    if spec == "word":
        if texts is None:
            raise ConfigError("a word-level vocabulary is built from the corpus; no texts were given")
        return WordVocab.build(texts, min_count=min_count)
    p = Path(spec)
    if p.is_file() and p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"tokenizer file {p}: not JSON ({exc})") from None
        if isinstance(data, dict) and data.get("kind") == "word":
            return tokenizer_from_state(data)
    return WordPiece(p)
