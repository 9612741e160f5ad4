"""Audio data modules: a folder of audio files, the Free Spoken Digit Dataset (official split), SC09 and LJSpeech.

Every clip is read with :func:`.io.read_audio` (resampled to the mel configuration's rate, mono, checked),
loudness-normalised (:func:`.io.normalize_loudness`) and brought to a fixed length. Three representations
(``mode``):

* ``"waveform"`` — ``x`` (1, length) samples in [-1, 1]; ``cond["label"]`` for labelled data (DiffWave
  unconditional / class-conditional generation, Kong et al. 2021, §5.2–5.3);
* ``"vocoder"`` — ``x`` (1, length) with ``cond["mel"]`` (n_mels, length / hop), the mel of the same samples
  (DiffWave as a neural vocoder, §5.1): ``crops_per_clip`` random crops (or placements, for a shorter clip) per
  training clip, the centred clip for held-out ones; sampling conditions on the held-out clips' mels;
* ``"mel"`` — ``x`` (1, n_mels, length / hop), the normalised log-mel (mel-spectrogram diffusion), with
  ``cond["label"]``.

All clips are loaded once in ``setup`` (FSDD is 2,500 clips of < 2 s).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from polydiff import ConfigError, DataError
from polydiff.data import DiffusionDataModule

from .io import AUDIO_SUFFIXES, fixed_length, normalize_loudness, read_audio
from .mel import MelConfig, mel_spectrogram

MODES = ("waveform", "vocoder", "mel")
FSDD_DIGITS = [str(d) for d in range(10)]
SC09_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class AudioItems(Dataset):
    """Batch-contract items from stacked tensors: ``x`` plus ``cond`` entries (labels, mels) per item."""

    def __init__(self, x: torch.Tensor, cond: Mapping[str, torch.Tensor] | None = None):
        self.x, self.cond = x, dict(cond or {})

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"x": self.x[i]}
        if self.cond:
            item["cond"] = {k: v[i] for k, v in self.cond.items()}
        return item


class AudioFolder(DiffusionDataModule):
    """Audio clips from a folder (or explicit lists of files), split into training and held-out files.

    Args:
        root: folder holding the files.
        train_files, val_files: file names relative to ``root`` (lists, or a text file with one name a line);
            by default every audio file under ``root`` is used and ``val_fraction`` of them (every k-th,
            deterministic) is held out.
        val_fraction: held-out share when ``val_files`` is not given.
        label_regex: a regex whose first group, matched against each file's path relative to ``root``, is
            its class (``r"^(\\d)_"`` for FSDD); ``class_names`` orders the classes. None = unlabelled.
        class_names: the classes in label order (default: the sorted distinct matches).
        conditional: hand labels to the model as ``cond["label"]`` (waveform and mel modes).
        mode: ``"waveform"``, ``"vocoder"`` or ``"mel"`` (see the module docstring).
        mel: the :class:`MelConfig` fields (its ``sample_rate`` is the rate every file is brought to).
        length: samples per item (a multiple of the hop); longer clips are centre-cropped, shorter ones
            zero-padded at both ends (in vocoder training: randomly placed crops). DiffWave's vocoder trains on
            crops of 62 frames of 256 samples (~16k samples).
        crops_per_clip: random training crops per clip in vocoder mode (drawn once from ``seed``).
        loudness_db: RMS level every clip is normalised to (dBFS); None keeps the files' levels.
        on_rate, channels, on_clip: how files at another rate, with several channels or clipped are handled
            (:func:`.io.read_audio`).
        limit: use at most this many files per split (quick runs and tests).
    """

    domain = "audio"

    def __init__(self, root: str | None = None, train_files: str | list[str] | None = None,
                 val_files: str | list[str] | None = None, val_fraction: float = 0.1,
                 label_regex: str | None = None, class_names: list[str] | None = None, conditional: bool = True,
                 mode: str = "waveform", mel: dict | None = None, length: int = 6144, crops_per_clip: int = 1, loudness_db: float | None = -20.0, on_rate: str = "resample",
                 channels: str = "error", on_clip: str = "warn", limit: int | None = None,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}; expected one of {MODES}")
        self.mel_config = MelConfig.from_dict(mel, f"{type(self).__name__}.mel")
        hop = self.mel_config.hop_length
        if length < hop or length % hop:
            raise ConfigError(f"length={length} must be a positive multiple of the hop length {hop}")
        if crops_per_clip < 1:
            raise ConfigError(f"crops_per_clip must be >= 1, got {crops_per_clip}")
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.root = None if root is None else Path(root)
        self.train_files_arg, self.val_files_arg = train_files, val_files
        self.val_fraction, self.label_regex, self.class_names = val_fraction, label_regex, class_names
        self.conditional, self.mode, self.length = conditional, mode, int(length)
        self.crops_per_clip = int(crops_per_clip)
        self.loudness_db, self.on_rate, self.channels, self.on_clip = loudness_db, on_rate, channels, on_clip
        self.limit = limit
        self.train_waves: list[np.ndarray] | None = None
        self.val_waves: list[np.ndarray] | None = None
        self.train_labels = self.val_labels = None
        self.train_paths: list[Path] = []
        self.val_paths: list[Path] = []

    # -- files ------------------------------------------------------------------------------------------
    def resolve_root(self) -> Path:
        """The folder holding the files (subclasses may download it)."""
        if self.root is None:
            raise ConfigError(f"{type(self).__name__}: pass root (the folder of audio files)")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: audio folder not found")
        return self.root

    def _names(self, spec, root: Path) -> list[str] | None:
        if spec is None:
            return None
        if isinstance(spec, str):
            p = Path(spec)
            p = p if p.is_absolute() or p.is_file() else root / p
            if not p.is_file():
                raise DataError(f"{p}: file list not found")
            return [line.strip() for line in p.read_text().splitlines() if line.strip()]
        return [str(s) for s in spec]

    def split_files(self) -> tuple[list[Path], list[Path]]:
        """(training files, held-out files) as paths."""
        root = self.resolve_root()
        train = self._names(self.train_files_arg, root)
        val = self._names(self.val_files_arg, root)
        if train is None or val is None:
            every = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
            if not every:
                raise DataError(f"{root}: holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
            if val is None and train is None:
                k = max(2, round(1 / self.val_fraction))
                val = every[::k]
            if val is None:
                val = sorted(set(every) - set(train))
            if train is None:
                train = sorted(set(every) - set(val))
        if self.limit is not None:
            train, val = train[:self.limit], val[:self.limit]
        if not train or not val:
            raise DataError(f"{root}: the split leaves {len(train)} training and {len(val)} held-out files; both "
                            "must be non-empty")
        return [root / n for n in train], [root / n for n in val]

    def labels_of(self, paths: Sequence[Path]) -> tuple[torch.Tensor | None, list[str] | None]:
        if self.label_regex is None:
            return None, None
        pattern = re.compile(self.label_regex)
        root = self.resolve_root()
        found = []
        for p in paths:
            m = pattern.search(str(p.relative_to(root)) if p.is_relative_to(root) else p.name)
            if m is None:
                raise DataError(f"{p}: its name does not match label_regex {self.label_regex!r}")
            found.append(m.group(1))
        names = list(self.class_names) if self.class_names else sorted(set(found))
        index = {n: i for i, n in enumerate(names)}
        bad = sorted(set(found) - set(index))
        if bad:
            raise DataError(f"{root}: classes {bad} are not in class_names {names}")
        return torch.tensor([index[f] for f in found], dtype=torch.long), names

    @property
    def num_classes(self) -> int | None:
        if self.label_regex is None:
            return None
        return len(self.class_names) if self.class_names else len(self.labels_of(self.split_files()[0])[1])

    def load(self, path: Path) -> np.ndarray:
        """One clip: read (at the mel rate, checked), loudness-normalised, not yet cut to length."""
        wave, _ = read_audio(path, self.mel_config.sample_rate, on_rate=self.on_rate, channels=self.channels,
                             on_clip=self.on_clip)
        return normalize_loudness(wave, self.loudness_db) if self.loudness_db is not None else wave

    def clip(self, wave: np.ndarray) -> np.ndarray:
        """A whole clip at the fixed ``length`` (centre crop / zero padding)."""
        return fixed_length(wave, self.length, "center")

    # -- setup --------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_paths, val_paths = self.split_files()
        self.train_paths, self.val_paths = train_paths, val_paths
        self.train_waves = [self.load(p) for p in train_paths]
        self.val_waves = [self.load(p) for p in val_paths]
        self.train_labels, names = self.labels_of(train_paths)
        self.val_labels, _ = self.labels_of(val_paths)
        if names is not None and self.class_names is None:
            self.class_names = names
        self.train_set = self._items(self.train_waves, self.train_labels, train=True)
        self.val_set = self._items(self.val_waves, self.val_labels, train=False)

    def _items(self, waves, labels, train: bool) -> AudioItems:
        cfg = self.mel_config
        cond: dict[str, torch.Tensor] = {}
        if self.mode == "vocoder":
            rng = np.random.default_rng(self.seed)
            if train:
                x = np.stack([fixed_length(w, self.length, "random", rng) for w in waves
                              for _ in range(self.crops_per_clip)])
            else:
                x = np.stack([self.clip(w) for w in waves])
            cond["mel"] = torch.from_numpy(mel_spectrogram(x, cfg))
            return AudioItems(torch.from_numpy(x)[:, None], cond)
        clips = np.stack([self.clip(w) for w in waves])
        if self.conditional and labels is not None:
            cond["label"] = labels
        if self.mode == "mel":
            return AudioItems(torch.from_numpy(mel_spectrogram(clips, cfg))[:, None], cond)
        return AudioItems(torch.from_numpy(clips)[:, None], cond)

    # -- sampling and evaluation inputs ---------------------------------------------------------------------
    def example_cond(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor] | None:
        if self.mode == "vocoder" or not self.conditional or self.label_regex is None:
            return None
        return {"label": torch.arange(n) % self.num_classes}

    def sample_inputs(self, n: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Vocoder mode: the mels of the first ``n`` held-out clips (cycling when n exceeds the held-out set);
        otherwise balanced labels."""
        if self.mode != "vocoder":
            return super().sample_inputs(n, generator)
        mel = torch.from_numpy(mel_spectrogram(np.stack(self.reference_clips(n)), self.mel_config))
        return {"cond": {"mel": mel}}

    def reference_clips(self, n: int | None = None, split: str = "val") -> list[np.ndarray]:
        """Whole clips at ``length`` (loudness-normalised), the first ``n`` of a split (cycling), as numpy."""
        self.require_set("train_set")
        waves = self.val_waves if split == "val" else self.train_waves
        n = len(waves) if n is None else n
        return [self.clip(waves[i % len(waves)]) for i in range(n)]

    def reference_regions(self, n: int | None = None, split: str = "val") -> list[tuple[int, int]]:
        """(start, stop) of each clip's own samples inside its fixed-length version (:meth:`reference_clips`):
        the zero padding of a short clip is outside, a long clip's centre crop is all of it."""
        self.require_set("train_set")
        waves = self.val_waves if split == "val" else self.train_waves
        n = len(waves) if n is None else n
        out = []
        for i in range(n):
            m = waves[i % len(waves)].shape[0]
            start = max(0, (self.length - m) // 2)
            out.append((start, start + min(m, self.length)))
        return out

    def labelled_clips(self, split: str) -> tuple[list[np.ndarray], torch.Tensor]:
        """(whole clips at ``length``, labels) of ``"train"`` or ``"val"`` for the evaluation classifier."""
        if self.label_regex is None:
            raise DataError(f"{type(self).__name__}: the clips carry no labels (set label_regex)")
        self.require_set("train_set")
        labels = self.val_labels if split == "val" else self.train_labels
        return self.reference_clips(None, split), labels

    def to_waveform(self, x: torch.Tensor) -> np.ndarray | None:
        """Samples in this module's representation → waveforms (batch, samples), or None for mel mode (a mel
        needs a vocoder or Griffin-Lim; see :func:`.artifacts.waveforms`)."""
        if self.mode == "mel":
            return None
        return x.detach().cpu().float().reshape(x.shape[0], -1).numpy()


class FSDD(AudioFolder):
    """Free Spoken Digit Dataset (Jackson et al., https://github.com/Jakobovski/free-spoken-digit-dataset),
    8 kHz mono recordings ``{digit}_{speaker}_{take}.wav`` with the official split: takes 0–4 are the test
    set, takes 5–49 train (the dataset's README). ``root`` is a folder of the recordings (e.g. the shared
    copy); without one the recordings are downloaded with pooch and checked file by file against sha256
    (:mod:`.datasets`). ``speakers`` restricts both splits to some speakers (a single-speaker vocoder).
    """

    def __init__(self, root: str | None = None, speakers: list[str] | None = None, test_takes: int = 5,
                 **kwargs):
        kwargs.setdefault("label_regex", r"^(\d)_")
        kwargs.setdefault("class_names", FSDD_DIGITS)
        super().__init__(root=root, **kwargs)
        self.speakers = None if speakers is None else [str(s) for s in speakers]
        self.test_takes = int(test_takes)

    def resolve_root(self) -> Path:
        if self.root is not None:
            return super().resolve_root()
        from .datasets import fsdd_folder

        return fsdd_folder()

    def split_files(self) -> tuple[list[Path], list[Path]]:
        root = self.resolve_root()
        pattern = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
        train, val = [], []
        for p in sorted(root.iterdir()):
            m = pattern.match(p.name)
            if m is None or (self.speakers is not None and m.group(2) not in self.speakers):
                continue
            (val if int(m.group(3)) < self.test_takes else train).append(p)
        if self.limit is not None:  # a balanced subset: every class is kept
            train, val = _balanced(train, self.limit), _balanced(val, self.limit)
        if not train or not val:
            raise DataError(f"{root}: no FSDD recordings {{digit}}_{{speaker}}_{{take}}.wav for both splits "
                            f"(speakers {self.speakers or 'all'}; found {len(train)} training, {len(val)} test)")
        return train, val


def _balanced(paths: list[Path], limit: int) -> list[Path]:
    """At most ``limit`` paths, taken round-robin over (digit, speaker) groups so every class and speaker stays."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(p.stem.rsplit("_", 1)[0], []).append(p)
    out, i = [], 0
    while len(out) < min(limit, len(paths)):
        for g in groups.values():
            if i < len(g) and len(out) < limit:
                out.append(g[i])
        i += 1
    return sorted(out)


class SC09(AudioFolder):
    """SC09 (Donahue et al. 2019, WaveGAN): the ten digit words "zero" … "nine" of Google Speech Commands v0.02
    (Warden 2018), 1 s clips at 16 kHz in ``<word>/<speaker>_nohash_<n>.wav``; the split follows the
    dataset's ``validation_list.txt``/``testing_list.txt`` (the test list is the held-out set here, and the
    validation list is left out of training). ``root`` is the extracted archive; without one it is
    downloaded (2.4 GB) with pooch and sha256. Resampled to the mel configuration's rate on load."""

    def __init__(self, root: str | None = None, **kwargs):
        kwargs.setdefault("label_regex", r"^(zero|one|two|three|four|five|six|seven|eight|nine)/")
        kwargs.setdefault("class_names", SC09_WORDS)
        cfg = MelConfig.from_dict(kwargs.get("mel"))  # 1 s clips: the longest multiple of the hop within 1 s
        kwargs.setdefault("length", cfg.sample_rate - cfg.sample_rate % cfg.hop_length)
        super().__init__(root=root, **kwargs)

    def resolve_root(self) -> Path:
        if self.root is not None:
            return super().resolve_root()
        from .datasets import speech_commands_folder

        return speech_commands_folder()

    def split_files(self) -> tuple[list[Path], list[Path]]:
        root = self.resolve_root()
        lists = {}
        for name in ("validation_list.txt", "testing_list.txt"):
            p = root / name
            if not p.is_file():
                raise DataError(f"{p}: not found; expected the Speech Commands v0.02 folder (with its split lists)")
            lists[name] = {line.strip() for line in p.read_text().splitlines() if line.strip()}
        words = set(SC09_WORDS)
        every = sorted(str(p.relative_to(root)) for w in SC09_WORDS if (root / w).is_dir()
                       for p in (root / w).glob("*.wav"))
        if not every:
            raise DataError(f"{root}: holds no SC09 clips (<digit word>/*.wav for {sorted(words)})")
        test = [n for n in every if n in lists["testing_list.txt"]]
        train = [n for n in every if n not in lists["testing_list.txt"] and n not in lists["validation_list.txt"]]
        if self.limit is not None:
            train, test = train[:self.limit], test[:self.limit]
        if not train or not test:
            raise DataError(f"{root}: the SC09 split leaves {len(train)} training and {len(test)} test clips")
        return [root / n for n in train], [root / n for n in test]


class LJSpeech(AudioFolder):
    """LJSpeech 1.1 (Ito & Johnson 2017): 13,100 clips of one speaker at 22.05 kHz, ``wavs/LJ*.wav`` listed in
    ``metadata.csv`` — DiffWave's vocoder data (Kong et al. 2021, §5.1). Unlabelled; the first
    ``num_val`` clips of ``metadata.csv`` are held out (DiffWave holds out LJ001* and LJ002*, about 400
    clips; a count keeps small runs possible). Without ``root`` the archive is downloaded with pooch and
    sha256. Use ``mode="vocoder"`` with a 22.05 kHz mel configuration for the paper's setting."""

    def __init__(self, root: str | None = None, num_val: int = 100, **kwargs):
        kwargs.setdefault("mode", "vocoder")
        kwargs.setdefault("label_regex", None)
        super().__init__(root=root, **kwargs)
        self.num_val = int(num_val)

    def resolve_root(self) -> Path:
        if self.root is not None:
            return super().resolve_root()
        from .datasets import ljspeech_folder

        return ljspeech_folder()

    def split_files(self) -> tuple[list[Path], list[Path]]:
        root = self.resolve_root()
        meta = root / "metadata.csv"
        if not meta.is_file():
            raise DataError(f"{meta}: not found; expected the LJSpeech-1.1 folder (metadata.csv and wavs/)")
        ids = [line.split("|", 1)[0].strip() for line in meta.read_text(encoding="utf-8").splitlines() if line.strip()]
        paths = [root / "wavs" / f"{i}.wav" for i in ids]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{missing[0]}: listed in {meta} but not found ({len(missing)} missing)")
        val, train = paths[:self.num_val], paths[self.num_val:]
        if self.limit is not None:
            train, val = train[:self.limit], val[:self.limit]
        if not train or not val:
            raise DataError(f"{root}: {len(paths)} clips leave {len(train)} training and {len(val)} held-out clips")
        return train, val
