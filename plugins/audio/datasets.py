"""Download records (pooch + sha256) of the audio datasets, answered through the ``polydiff_datasets`` hook.

* ``fsdd`` — the Free Spoken Digit Dataset v1.0.10 recordings, one file at a time from the tagged GitHub
  tree. FSDD publishes no checksums; the sha256 of each of the 2,500 recordings of the five speakers
  jackson, lucas, nicolas, theo and yweweler (the set this project's benchmarks use) was measured on an
  unchanged copy and ships as ``registry/fsdd_sha256.txt``.
* ``speech_commands_v0.02`` — Google Speech Commands v0.02 (2.4 GB), of which SC09 is the digit words; the
  sha256 is the one torchaudio and TensorFlow Datasets publish.
* ``ljspeech`` — LJSpeech 1.1 (2.6 GB); sha256 as published by torchaudio.

Nothing is downloaded at import time; tests run the loaders on local files only.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from polydiff import DataError
from polydiff.datasets import DatasetInfo, RemoteFile, cache_dir, fetch, safe_extract

FSDD_URL = "https://raw.githubusercontent.com/Jakobovski/free-spoken-digit-dataset/v1.0.10/recordings/"
SPEECH_COMMANDS = "speech_commands_v0.02.tar.gz"
LJSPEECH = "LJSpeech-1.1.tar.bz2"


def _fsdd_files() -> tuple[RemoteFile, ...]:
    text = (importlib.resources.files(__package__) / "registry" / "fsdd_sha256.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.strip()]
    return tuple(RemoteFile(name, FSDD_URL + name, sha) for name, sha in rows)


def infos() -> list[DatasetInfo]:
    """The dataset records of the audio plugin."""
    return [
        DatasetInfo(
            name="fsdd", domain="audio",
            description="Free Spoken Digit Dataset v1.0.10: 8 kHz spoken digits, 5 speakers × 10 digits × 50 takes",
            files=_fsdd_files(), licence="CC BY-SA 4.0",
            citation="Z. Jackson et al. Free Spoken Digit Dataset (FSDD), v1.0.10. Zenodo, 2018. "
                     "doi:10.5281/zenodo.1342401",
            homepage="https://github.com/Jakobovski/free-spoken-digit-dataset",
            notes="official split: takes 0-4 test, 5-49 train; per-file sha256 measured on an unchanged copy"),
        DatasetInfo(
            name="speech_commands_v0.02", domain="audio",
            description="Google Speech Commands v0.02 (SC09 = its digit words zero..nine), 16 kHz, 1 s clips",
            files=(RemoteFile(SPEECH_COMMANDS, f"https://download.tensorflow.org/data/{SPEECH_COMMANDS}",
                              "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),),
            licence="CC BY 4.0",
            citation="P. Warden. Speech Commands: A dataset for limited-vocabulary speech recognition. "
                     "arXiv:1804.03209, 2018. C. Donahue et al. Adversarial audio synthesis (SC09). ICLR 2019.",
            homepage="https://www.tensorflow.org/datasets/catalog/speech_commands"),
        DatasetInfo(
            name="ljspeech", domain="audio",
            description="LJSpeech 1.1: 13,100 clips of one English speaker, 22.05 kHz (DiffWave's vocoder data)",
            files=(RemoteFile(LJSPEECH, f"https://data.keithito.com/data/speech/{LJSPEECH}",
                              "be1a30453f28eb8dd26af4101ae40cbf2c50413b1bb21936cbcdc6fae3de8aa5"),),
            licence="public domain",
            citation="K. Ito and L. Johnson. The LJ Speech Dataset. https://keithito.com/LJ-Speech-Dataset/, 2017.",
            homepage="https://keithito.com/LJ-Speech-Dataset/"),
    ]


def _info(name: str) -> DatasetInfo:
    return next(i for i in infos() if i.name == name)


def fsdd_folder(root: str | Path | None = None) -> Path:
    """A folder holding every FSDD recording of the registry, each downloaded (and sha256-checked) if absent."""
    info = _info("fsdd")
    for f in info.files:
        fetch(info, f.name, root)
    return info.local_dir(root)


def _extracted(name: str, archive: str, inner: str, marker: str, root) -> Path:
    info = _info(name)
    folder = info.local_dir(root)
    target = folder / inner if inner else folder
    if (target / marker).exists():
        return target
    safe_extract(fetch(info, archive, root), target)
    if not (target / marker).exists():
        raise DataError(f"{folder / archive}: extracted, but {target / marker} is missing")
    return target


def speech_commands_folder(root: str | Path | None = None) -> Path:
    """The extracted Speech Commands v0.02 folder (downloaded and checked on first use)."""
    return _extracted("speech_commands_v0.02", SPEECH_COMMANDS, "speech_commands_v0.02", "testing_list.txt", root)


def ljspeech_folder(root: str | Path | None = None) -> Path:
    """The extracted ``LJSpeech-1.1`` folder (downloaded and checked on first use)."""
    folder = _extracted("ljspeech", LJSPEECH, "", "LJSpeech-1.1/metadata.csv", root)
    return folder / "LJSpeech-1.1"


__all__ = ["infos", "fsdd_folder", "speech_commands_folder", "ljspeech_folder", "cache_dir"]
