"""The user path through the real CLI: ``polydiff select`` on a folder of labelled validation subjects writes
the chosen settings beside the checkpoint, ``polydiff detect`` uses and records them by default, and
``polydiff evaluate`` on another folder of subjects prints AUPRC / Dice with subject-bootstrap intervals."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.cli import main

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "plugins" / "medical" / "configs" / "anoddpm_ixi.yaml"


def _synth():
    base = Path(os.environ.get("POLYDIFF_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = base / "medical" / "derived" / "ixi_synth_64.npz"
    if not path.is_file():
        msg = f"{path} is absent: the medical user-path test needs ../shared/data"
        if os.environ.get("POLYDIFF_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def _subject_folder(root: Path, d, split: str, idx) -> Path:
    """healthy/<subject>.png and labelled/<subject>.png + <subject>_seg.png from ixi_synth slices."""
    from polydiff.plugins.medical.io import write_png

    for i in idx:
        subj, img = str(d[f"{split}_subject"][i]), torch.from_numpy(d[f"{split}_img"][i].astype(np.float32))
        if d[f"{split}_label"][i]:
            write_png(img, root / "labelled" / f"{subj}.png")
            write_png(torch.from_numpy(d[f"{split}_seg"][i].astype(np.float32)), root / "labelled" / f"{subj}_seg.png")
        else:
            write_png(img, root / "healthy" / f"{subj}.png")
    return root


def _config(path: Path, folder: Path) -> Path:
    path.write_text(f"""data:
  class_path: SubjectFolderDataModule
  init_args:
    folder: {folder}
    image_size: 32
    eval_steps: 2
    eval_n_boot: 50
""")
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    synth = _synth()
    work = tmp_path_factory.mktemp("medical_user")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    torch.set_num_threads(1)
    rc = main(["fit", "--config", str(CONFIG), f"--trainer.default_root_dir={work / 'runs'}",
               "--trainer.max_steps=2", "--trainer.enable_progress_bar=false",
               "--model.init_args.backbone.init_args.base_channels=8", "--model.init_args.sample_steps=2",
               "--model.init_args.val_num_samples=0", "--model.init_args.final_num_samples=1",
               f"--data.init_args.path={synth}", "--data.init_args.image_size=32", "--data.init_args.batch_size=4"])
    assert rc == 0
    d = np.load(synth)
    sel = _subject_folder(work / "site_val", d, "val", range(16))
    test = _subject_folder(work / "site_test", d, "test", range(16))
    yield work, sorted(work.rglob("last.ckpt"))[0], sel, test
    mp.undo()


def test_select_then_detect_uses_and_records_the_selected_settings(work, capsys):
    w, ckpt, sel, test = work
    cfg = _config(w / "sel.yaml", sel)
    assert main(["select", "--ckpt", str(ckpt), "--config", str(cfg), "--levels", "50", "--repeats", "1", "2",
                 "--medians", "3", "--fprs", "0.02", "0.05", "--folds", "3", "--steps", "2"]) == 0
    blob = json.loads(Path(str(ckpt) + ".selection.json").read_text())
    chosen = blob["setting"]
    assert chosen["family"] in ("thor", "anoddpm") and chosen["level"] == 50 and chosen["steps"] == 2
    assert len(blob["cv"]) == 2 * 2 * 2 and blob["threshold"] > 0
    assert set(blob["selection_subjects"]).isdisjoint(p.stem.replace("_seg", "") for p in test.rglob("*.png"))
    assert "chosen:" in capsys.readouterr().out

    scan = sorted((test / "labelled").glob("*[0-9].png"))[0]
    out = w / "detect"
    assert main(["detect", "--ckpt", str(ckpt), "--input", str(scan), "--out", str(out)]) == 0
    summary = json.loads((out / "detect.json").read_text())
    assert {k: summary["settings"][k] for k in chosen} == chosen
    assert summary["settings_source"].startswith("selected by cross-validation")
    assert summary["threshold"] == pytest.approx(blob["threshold"])
    assert (out / "lesion_mask.png").is_file()
    # an explicit option overrides the selection, is recorded, and drops the selection's threshold
    assert main(["detect", "--ckpt", str(ckpt), "--input", str(scan), "--out", str(out), "--level", "30"]) == 0
    summary = json.loads((out / "detect.json").read_text())
    assert summary["settings"]["level"] == 30 and "overridden" in summary["settings_source"]
    assert summary["threshold"] is None


def test_evaluate_on_a_folder_of_subjects_prints_intervals(work, capsys):
    w, ckpt, _, test = work
    cfg = _config(w / "test.yaml", test)
    out = w / "metrics.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--config", str(cfg), "--num", "1", "--steps", "2",
                 "--out", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    for p in ("medical/", "medical/zscore/", "medical/pca/"):
        assert m[f"{p}pixel_auprc_ci95_low"] <= m[f"{p}pixel_auprc"] <= m[f"{p}pixel_auprc_ci95_high"]
        assert m[f"{p}dice_ci95_low"] <= m[f"{p}dice"] <= m[f"{p}dice_ci95_high"]
    assert m["medical/num_test_subjects"] == len(list((test / "labelled").glob("*_seg.png")))
    assert "pixel_auprc_ci95_high" in capsys.readouterr().out


def test_subject_folder_errors_name_the_problem(tmp_path):
    from polydiff import DataError
    from polydiff.plugins.medical.data import SubjectFolderDataModule
    from polydiff.plugins.medical.io import write_png

    write_png(torch.rand(16, 16), tmp_path / "healthy" / "a.png")
    write_png(torch.rand(16, 16), tmp_path / "labelled" / "b.png")
    dm = SubjectFolderDataModule(str(tmp_path), image_size=16)
    with pytest.raises(DataError, match="b_seg"):
        dm.setup("fit")
    write_png(torch.zeros(16, 16), tmp_path / "labelled" / "b_seg.png")
    write_png(torch.rand(16, 16), tmp_path / "labelled" / "a.png")
    write_png(torch.zeros(16, 16), tmp_path / "labelled" / "a_seg.png")
    with pytest.raises(DataError, match="both healthy"):
        SubjectFolderDataModule(str(tmp_path), image_size=16).setup("fit")
