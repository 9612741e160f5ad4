"""Public text files of the text plugin (``polydiff.plugins.text``), registered for download by name.

Registered (raw GitHub URLs; each sha256 was computed from the project's shared copy under
``../shared/data/text/``, see its MANIFEST.md for sources). The control targets and tinyshakespeare copies
were compared (length, content) with the repositories' files found with the project's code search on
2026-12-07; ``src1_valid.txt`` could not be (the index holds no upstream copy), so its hash is that of the
shared copy, which the MANIFEST records as Diffusion-LM's file; a different download fails :func:`fetch`:

* ``e2e_nlg`` — ``src1_valid.txt``: the E2E NLG validation set (Novikova et al. 2017) in Diffusion-LM's
  ``meaning representation || text`` format, 4,672 lines (Li et al. 2022, §7.1), from
  ``XiangLi1999/Diffusion-LM`` ``datasets/e2e_data/``. The train and test files of that folder are *not*
  registered: no copy is at hand to compute their sha256, and this project registers no file unchecked.
* ``e2e_control_targets`` — Diffusion-LM's control targets (``datasets/control_target/target_{attribute,pos,
  spans}.json``), stored under the shared copies' names ``control_target_*.json``.
* ``tinyshakespeare`` — ``input.txt`` of ``karpathy/char-rnn`` (``data/tinyshakespeare/``), 1.1 MB.

Not registered, because they cannot be downloaded from a stable URL: QQP and Commonsense Conversation in
DiffuSeq's ``{"src", "trg"}`` JSONL (Gong et al. 2022) are shared as Google Drive folders (see the dataset table
of ``Shark-NLP/DiffuSeq``'s README), so users pass their local ``.jsonl`` path; ROCStories (Mostafazadeh et al.
2016) is given out only through a request form at https://cs.rochester.edu/nlp/rocstories/, so users export
it one story a line and pass that path (:func:`~polydiff.plugins.text.data.load_plain`).

:func:`corpus_path` turns a :class:`~polydiff.plugins.text.data.TextDataModule` ``path`` into a local file: an
existing file as it is, a name of :data:`CORPORA` (``"e2e:valid"``, ``"tinyshakespeare"``) fetched and verified.
"""

from __future__ import annotations

from pathlib import Path

from ._core import DatasetInfo, RemoteFile, fetch, register

_DIFFUSION_LM = "https://raw.githubusercontent.com/XiangLi1999/Diffusion-LM/main/datasets/"
_LI_2022 = ("X. L. Li, J. Thickstun, I. Gulrajani, P. Liang, T. B. Hashimoto. Diffusion-LM improves "
            "controllable text generation. NeurIPS 2022.")

E2E = register(DatasetInfo(
    name="e2e_nlg",
    domain="text",
    description="E2E NLG validation set in Diffusion-LM's 'MR || text' format, 4,672 lines (547 MRs)",
    files=(RemoteFile("src1_valid.txt", _DIFFUSION_LM + "e2e_data/src1_valid.txt",
                      "ba963113c8401d3d26216c0dc0a6dae1ea6ea927de3bf830e32c41f65401c80d"),),
    licence="CC BY-SA 4.0 (E2E NLG dataset)",
    citation="J. Novikova, O. Dusek, V. Rieser. The E2E dataset: new challenges for end-to-end generation. "
             "SIGDIAL 2017. " + _LI_2022,
    homepage="https://github.com/XiangLi1999/Diffusion-LM",
    notes="train/test files of datasets/e2e_data/ are not registered (no verified sha256)",
))

E2E_CONTROL = register(DatasetInfo(
    name="e2e_control_targets",
    domain="text",
    description="Diffusion-LM's E2E control targets (semantic content, parts of speech, syntax spans), JSON lines",
    files=tuple(RemoteFile(f"control_target_{kind}.json", f"{_DIFFUSION_LM}control_target/target_{kind}.json", sha)
                for kind, sha in (
                    ("attribute", "04fc47af7a647053abfd3a7a1f2ad2c1362771fc374beb2db3e74980484921b8"),
                    ("pos", "9d49508d76cf770e421509bf6d6a063afc71423c0f6359a315175e6d7db96804"),
                    ("spans", "aa1605b26325ba039aae38a00a89751a39e54769ea0a39508bafe7148a0b762e"))),
    licence="Apache-2.0 (Diffusion-LM repository)",
    citation=_LI_2022,
    homepage="https://github.com/XiangLi1999/Diffusion-LM",
))

TINYSHAKESPEARE = register(DatasetInfo(
    name="tinyshakespeare",
    domain="text",
    description="Tiny Shakespeare: 1.1 MB of Shakespeare's plays as one plain-text file (char-rnn)",
    files=(RemoteFile("input.txt", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                                   "tinyshakespeare/input.txt",
                      "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
    licence="public domain text; MIT (char-rnn repository)",
    citation="A. Karpathy. The unreasonable effectiveness of recurrent neural networks. 2015. "
             "https://github.com/karpathy/char-rnn",
    homepage="https://github.com/karpathy/char-rnn",
))

#: Corpus names accepted by :func:`corpus_path` -> (dataset, file).
CORPORA: dict[str, tuple[DatasetInfo, str]] = {
    "e2e:valid": (E2E, "src1_valid.txt"),
    "tinyshakespeare": (TINYSHAKESPEARE, "input.txt"),
}


def corpus_path(spec: str | Path, root: str | Path | None = None) -> Path:
    """A local text file for ``spec``: an existing file is returned as it is; a name of :data:`CORPORA` is
    fetched (from ``root`` or the cache, downloaded with pooch if absent) and checked against its sha256;
    anything else is returned as a path, so that the loader reports it as missing."""
    path = Path(spec)
    if path.exists() or str(spec) not in CORPORA:
        return path
    info, filename = CORPORA[str(spec)]
    return fetch(info, filename, root)


__all__ = ["E2E", "E2E_CONTROL", "TINYSHAKESPEARE", "CORPORA", "corpus_path"]
