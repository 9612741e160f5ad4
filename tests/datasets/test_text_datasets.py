"""Text corpora registry: each registered file's sha256 is that of the shared copy, a wrong file is refused by
name, and a pre-filled cache is used without network (pooch is made to fail if it is ever called)."""

import shutil

import pytest

from polydiff.datasets import fetch, get_info, verify_file
from polydiff.datasets import text_corpora
from polydiff.errors import DataError
from tests.conftest import require_shared

# registered file -> its shared copy under ../shared/data
SHARED = {
    ("e2e_nlg", "src1_valid.txt"): ("text", "e2e", "src1_valid.txt"),
    ("e2e_control_targets", "control_target_attribute.json"): ("text", "e2e", "control_target_attribute.json"),
    ("e2e_control_targets", "control_target_pos.json"): ("text", "e2e", "control_target_pos.json"),
    ("e2e_control_targets", "control_target_spans.json"): ("text", "e2e", "control_target_spans.json"),
    ("tinyshakespeare", "input.txt"): ("text", "tinyshakespeare", "input.txt"),
}


@pytest.fixture
def no_network(monkeypatch):
    pooch = pytest.importorskip("pooch")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network download attempted: {args}")

    monkeypatch.setattr(pooch, "retrieve", refuse)


def test_every_text_file_is_registered_with_url_and_sha256():
    registered = {(name, f.name) for name in ("e2e_nlg", "e2e_control_targets", "tinyshakespeare")
                  for f in get_info(name).files}
    assert registered == set(SHARED)
    for name in ("e2e_nlg", "e2e_control_targets", "tinyshakespeare"):
        info = get_info(name)
        assert info.domain == "text" and info.licence and info.citation
        assert all(f.url.startswith("https://raw.githubusercontent.com/") and len(f.sha256) == 64 for f in info.files)
    assert get_info("e2e_nlg").files[0].url.endswith("XiangLi1999/Diffusion-LM/main/datasets/e2e_data/src1_valid.txt")


@pytest.mark.parametrize("key", sorted(SHARED), ids=lambda k: f"{k[0]}/{k[1]}")
def test_sha256_matches_shared_copy(key):
    name, filename = key
    rf = next(f for f in get_info(name).files if f.name == filename)
    shared = require_shared(*SHARED[key])
    assert verify_file(shared, rf.sha256) == shared


def test_wrong_file_is_a_data_error_naming_it(tmp_path, no_network):
    bad = tmp_path / "src1_valid.txt"
    bad.write_text("name : Aromi||Aromi is a pub .\n")
    with pytest.raises(DataError, match=r"src1_valid\.txt: sha256 is [0-9a-f]{64}, expected ba963113"):
        fetch("e2e_nlg", "src1_valid.txt", root=tmp_path)
    with pytest.raises(DataError, match="no file 'src1_train.txt'"):
        fetch("e2e_nlg", "src1_train.txt", root=tmp_path)


def test_prefilled_cache_is_used_offline(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("POLYDIFF_DATA", str(tmp_path))
    for (name, filename), parts in SHARED.items():
        (tmp_path / name).mkdir(exist_ok=True)
        shutil.copyfile(require_shared(*parts), tmp_path / name / filename)
        assert fetch(name, filename) == tmp_path / name / filename
    assert text_corpora.corpus_path("e2e:valid") == tmp_path / "e2e_nlg" / "src1_valid.txt"
    assert text_corpora.corpus_path("tinyshakespeare") == tmp_path / "tinyshakespeare" / "input.txt"


def test_text_data_module_accepts_a_corpus_name(tmp_path, monkeypatch, no_network):
    from polydiff.plugins.text.data import TextDataModule

    monkeypatch.setenv("POLYDIFF_DATA", str(tmp_path))
    (tmp_path / "e2e_nlg").mkdir()
    shutil.copyfile(require_shared("text", "e2e", "src1_valid.txt"), tmp_path / "e2e_nlg" / "src1_valid.txt")
    dm = TextDataModule("e2e:valid", source=True, max_items=100, vocab_size=2048, seq_len=128, lm_judge=None)
    with pytest.warns(UserWarning, match="outside the vocabulary"):  # validation words unseen in 100 lines
        dm.setup("fit")
    assert len(dm.train_records) == 100 and dm.train_records[0].source.startswith("name : ")
    assert len(dm.train_records) + len(dm.val_records) > 100  # validation: 5 % of the 4,672 lines
    # an existing file keeps precedence over a name, and an unknown name is reported as a missing file
    assert text_corpora.corpus_path(tmp_path / "e2e_nlg" / "src1_valid.txt") == tmp_path / "e2e_nlg" / "src1_valid.txt"
    with pytest.raises(DataError, match="text file e2e:test does not exist"):
        TextDataModule("e2e:test", lm_judge=None).setup("fit")
