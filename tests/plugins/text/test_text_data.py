"""Text loaders, tokenisers and the text data module: formats, bad input named by line, dynamic lengths."""

from __future__ import annotations

import json

import pytest
import torch

from polydiff.errors import ConfigError, DataError
from polydiff.plugins.text.data import (TextDataModule, decode_rows, encode_records, load_e2e, load_jsonl,
                                        load_plain, load_records)
from polydiff.plugins.text.tokenization import WordPiece, WordVocab, load_tokenizer, tokenizer_from_state
from tests.conftest import require_shared


def test_empty_only_file_is_a_data_error(tmp_path):
    f = tmp_path / "empty.txt"
    f.write_text("\n   \n\n")
    with pytest.raises(DataError, match="only empty lines"):
        load_plain(f)
    with pytest.raises(DataError, match="only empty lines"):
        TextDataModule(str(f)).setup()


def test_malformed_lines_are_named_and_the_rest_is_kept(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text('{"src": "a b", "trg": "c d"}\n{"src": "x", "trg": \n\n["not", "an object"]\n'
                 '{"src": "e", "trg": "f g"}\n')
    with pytest.warns(UserWarning, match=r"skipped 2 line\(s\) \(line 2: malformed JSON.*line 4: expected an object"):
        recs = load_jsonl(f)
    assert [(r.source, r.text, r.line) for r in recs] == [("a b", "c d", 1), ("e", "f g", 5)]
    e2e = tmp_path / "e2e.txt"
    e2e.write_text("name : A || A is good .\nno separator here\nname : B || \n")
    with pytest.warns(UserWarning, match="line 2: no '\\|\\|'.*line 3: empty"):
        recs = load_e2e(e2e)
    assert [(r.source, r.text) for r in recs] == [("name : A", "A is good .")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="line 1: malformed JSON"):
        load_jsonl(bad)


def test_over_long_lines_truncate_or_raise_and_unknown_words_are_named(tmp_path):
    tok = WordVocab.build(["a b c"])
    recs = load_records(_write(tmp_path / "t.txt", "a b\na b c a b c a b\nzz a\n"), "plain")
    with pytest.warns(UserWarning) as record:
        rows = encode_records(recs, tok, seq_len=4, where="t.txt")
    msgs = [str(w.message) for w in record]
    assert any("truncated 1 line(s) longer than seq_len=4 tokens (lines 2)" in m for m in msgs)
    assert any("1 line(s) hold tokens outside the vocabulary, read as [UNK] (lines 3)" in m for m in msgs)
    assert rows["presence"].sum(1).tolist() == [3, 4, 3]
    assert rows["x"][1].tolist() == [tok.index["a"], tok.index["b"], tok.index["c"], tok.eos_id]
    assert decode_rows(tok, rows["x"], rows["presence"]) == ["a b", "a b c", "[UNK] a"]
    with pytest.raises(DataError, match="t.txt: line 2 has 9 tokens; seq_len is 4"):
        encode_records(recs, tok, seq_len=4, on_long="error", where="t.txt")


def test_source_prefix_is_known(tmp_path):
    tok = WordVocab.build(["p q", "x y z"])
    recs = load_jsonl(_write(tmp_path / "s.jsonl", json.dumps({"src": "p q", "trg": "x y z"}) + "\n"))
    rows = encode_records(recs, tok, seq_len=8, source=True)
    assert rows["known"][0].tolist() == [True] * 3 + [False] * 5
    assert rows["presence"][0].tolist() == [True] * 7 + [False]
    assert rows["x"][0, 2] == tok.bos_id
    assert decode_rows(tok, rows["x"], rows["presence"], rows["known"]) == ["x y z"]


def test_word_vocab_order_and_state_roundtrip():
    tok = WordVocab.build(["b a b", "c b a"], min_count=2)
    assert tok.words == ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "b", "a"]
    again = tokenizer_from_state(json.loads(json.dumps(tok.state())))
    assert again.encode("a c b") == tok.encode("a c b") == [5, 1, 4]


def test_wordpiece_from_shared_files_and_missing_file(tmp_path):
    folder = require_shared("text", "tokenizer_bert_uncased")
    tok = load_tokenizer(str(folder))
    assert isinstance(tok, WordPiece) and tok.vocab_size == 30522
    ids = tok.encode("The Vaults is a pub near Café Adriatic.")
    assert tok.decode(ids) == "the vaults is a pub near cafe adriatic."
    assert tokenizer_from_state(tok.state()).encode("pub") == tok.encode("pub")
    with pytest.raises(ConfigError, match="does not exist"):
        WordPiece(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid tokenizers file"):
        WordPiece(tmp_path / "broken.json")


def test_e2e_module_rows_lengths_and_sampling_inputs():
    path = require_shared("text", "e2e", "src1_valid.txt")
    dm = TextDataModule(str(path), vocab_size=1200, seq_len=64)
    with pytest.warns(UserWarning, match="truncated 3 line"):
        dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 4672 and dm.sample_shape == (64,)
    item = dm.train_set[0]
    assert item["x"].dtype == torch.long and int(item["x"].max()) < 1200
    assert int(item["presence"].sum()) == len(dm.train_records[0].text.split()) + 1
    si = dm.sample_inputs(500, torch.Generator().manual_seed(0))
    lengths = si["presence"].sum(1)
    hist = dm.length_histogram()
    assert bool((hist[lengths] > 0).all())  # only lengths seen in training
    assert abs(lengths.double().mean() - (hist * torch.arange(65)).sum() / hist.sum()) < 1.5
    with pytest.raises(ConfigError, match="has 30522 entries"):
        TextDataModule(str(path), tokenizer=str(require_shared("text", "tokenizer_bert_uncased")),
                       vocab_size=1200).setup()


def test_qqp_and_diffuseq_jsonl_with_wordpiece():
    path = require_shared("text", "diffuseq_cc", "train.jsonl")
    tok = str(require_shared("text", "tokenizer_bert_uncased"))
    dm = TextDataModule(str(path), val_path=str(require_shared("text", "diffuseq_cc", "valid.jsonl")),
                        tokenizer=tok, vocab_size=30522, seq_len=128, source=True)
    dm.setup()
    assert len(dm.train_set) == 19 and len(dm.val_set) == 10
    item = dm.val_set[0]
    assert item["known"].any() and not (item["known"] & ~item["presence"]).any()
    si = dm.sample_inputs(4)
    assert set(si) == {"presence", "known", "x_known"}


def _write(path, text):
    path.write_text(text)
    return path
