"""EDM's EGNN: E(3) equivariance and permutation equivariance to 1e-5 in float64 (with padded batches), and the
centre of mass of the positions stays zero through a training step and every sampling step."""

import pytest
import torch

pytest.importorskip("torch_geometric")
pytest.importorskip("rdkit")

from polydiff.plugins.molecule.model import EDMBackbone  # noqa: E402
from polydiff.training import DiffusionModule  # noqa: E402
from tests.conftest import require_shared  # noqa: E402

PARTS = {"pos": {"features": 3, "space": "zero_com"}, "types": {"features": 5, "scale": 0.25},
         "charges": {"features": 1, "scale": 0.1}}


def _orthogonal(det: float, g) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    if torch.sign(torch.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    b, n = 3, 8
    presence = torch.ones(b, n, dtype=torch.bool)
    presence[1, 6:] = False
    presence[2, 3:] = False
    mask = presence[..., None].double()
    parts = {"pos": torch.randn(b, n, 3, generator=g, dtype=torch.float64) * mask,
             "types": torch.randn(b, n, 5, generator=g, dtype=torch.float64) * mask,
             "charges": torch.randn(b, n, 1, generator=g, dtype=torch.float64) * mask}
    t = torch.rand(b, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    net = EDMBackbone(hidden=32, layers=3).double()
    # make the coordinate head matter (it starts near zero, which would make the test weak)
    for layer in net.net.inner.layers:
        torch.nn.init.normal_(layer.coord[-1].weight, std=0.3)
    return net, parts, t, presence, g


def test_outputs_depend_on_the_geometry(batch):
    net, parts, t, presence, _ = batch
    out = net(parts, t, {"presence": presence})
    moved = dict(parts, pos=parts["pos"] * 1.3)
    out2 = net(moved, t, {"presence": presence})
    assert (out2["pos"] - out["pos"]).abs().max() > 1e-2
    assert (out2["types"] - out["types"]).abs().max() > 1e-3


@pytest.mark.parametrize("det", [1.0, -1.0], ids=["rotation", "reflection"])
def test_e3_equivariance(batch, det):
    net, parts, t, presence, g = batch
    q = _orthogonal(det, g)
    shift = torch.randn(parts["pos"].shape[0], 1, 3, generator=g, dtype=torch.float64) * 5
    mask = presence[..., None].double()
    out = net(parts, t, {"presence": presence})
    moved = dict(parts, pos=(parts["pos"] @ q.T + shift) * mask)
    out2 = net(moved, t, {"presence": presence})
    torch.testing.assert_close(out2["pos"], out["pos"] @ q.T, atol=1e-5, rtol=0)
    torch.testing.assert_close(out2["types"], out["types"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out2["charges"], out["charges"], atol=1e-5, rtol=0)


def test_translation_invariance_and_zero_com_output(batch):
    net, parts, t, presence, _ = batch
    mask = presence[..., None].double()
    out = net(parts, t, {"presence": presence})
    out2 = net(dict(parts, pos=(parts["pos"] + torch.tensor([3.0, -2.0, 7.0], dtype=torch.float64)) * mask), t,
               {"presence": presence})
    torch.testing.assert_close(out2["pos"], out["pos"], atol=1e-5, rtol=0)
    com = (out["pos"] * mask).sum(1) / mask.sum(1)
    assert com.abs().max() < 1e-12
    assert out["pos"][~presence].abs().max() == 0 and out["types"][~presence].abs().max() == 0


def test_node_permutation_equivariance(batch):
    net, parts, t, presence, g = batch
    out = net(parts, t, {"presence": presence})
    perm = torch.randperm(6, generator=g)  # item 1 has 6 atoms; permute them, padding stays at the end
    p2 = {k: v.clone() for k, v in parts.items()}
    for k in p2:
        p2[k][1, :6] = parts[k][1, perm]
    out2 = net(p2, t, {"presence": presence})
    for k in out:
        torch.testing.assert_close(out2[k][1, :6], out[k][1, perm], atol=1e-5, rtol=0)
        torch.testing.assert_close(out2[k][0], out[k][0], atol=1e-5, rtol=0)  # other molecules unaffected


def test_centre_of_mass_stays_zero_in_training_and_sampling():
    xyz = require_shared("molecule", "qm9_dft_19_from_schnetpack.xyz")
    from polydiff.plugins.molecule.data import MoleculeFiles

    dm = MoleculeFiles([str(xyz)], batch_size=8, val_fraction=0.1)
    dm.setup()
    torch.manual_seed(0)
    module = DiffusionModule(EDMBackbone(hidden=16, layers=2), process={"class_path": "VP", "init_args": {
        "schedule": {"class_path": "polydiff.schedules.PolynomialSchedule"}, "num_steps": 50}},
        parts=PARTS, ema_decay=0, sampler="ddpm", sample_steps=20)
    module.attach_datamodule(dm)
    seen = []

    def record(_mod, args):
        parts, _t, cond = args
        m = cond["presence"][..., None].to(parts["pos"].dtype)
        com = ((parts["pos"] * m).sum(1) / m.sum(1)).abs().max().item()
        seen.append(com / max(1.0, parts["pos"].abs().max().item()))  # relative to the float32 values' size

    egnn = next(m for m in module.modules() if isinstance(m, EDMBackbone))
    handle = egnn.register_forward_pre_hook(record)
    batch = next(iter(dm.train_dataloader()))
    module.compute_loss(batch, torch.Generator().manual_seed(0))["loss"].backward()
    assert len(seen) == 1 and seen[0] < 1e-5  # the noisy training input x_t is centred
    seen.clear()
    out = module.sample(6, sizes="3:9", generator=torch.Generator().manual_seed(1))
    handle.remove()
    assert len(seen) == 20 and max(seen) < 1e-6  # every sampling step's input
    pos, pres = out["x"]["pos"], out["presence"][..., None].float()
    assert ((pos * pres).sum(1) / pres.sum(1)).abs().max() < 1e-5
    assert int(out["presence"].sum(1).min()) >= 3 and int(out["presence"].sum(1).max()) <= 9


def test_property_conditioning_reaches_the_network(tmp_path):
    from polydiff.plugins.molecule.data import SmilesConformers

    src = tmp_path / "props.csv"
    src.write_text("smiles,alpha\nCCO,1.0\nCC(=O)N,2.0\nCC#N,3.0\nOCCO,4.0\n")
    dm = SmilesConformers(str(src), property="alpha", cache_dir="", val_fraction=0.0, batch_size=4)
    dm.setup()
    values = sorted(float(dm.train_set[i]["cond"]["property"]) for i in range(4))
    raw = torch.tensor([1.0, 2, 3, 4], dtype=torch.float64)
    assert values == pytest.approx(((raw - 2.5) / raw.std(unbiased=False)).tolist(), abs=1e-6)  # on the training set
    torch.manual_seed(0)
    module = DiffusionModule(EDMBackbone(hidden=16, layers=2, context_features=1), parts=PARTS, ema_decay=0,
                             sampler="ddpm", sample_steps=5, process={"class_path": "VP", "init_args": {
                                 "schedule": {"class_path": "polydiff.schedules.PolynomialSchedule"},
                                 "num_steps": 50}})
    module.attach_datamodule(dm)
    batch = next(iter(dm.train_dataloader()))
    assert batch["cond"]["property"].shape == (4, 1)
    module.compute_loss(batch, torch.Generator().manual_seed(0))["loss"].backward()
    net = next(m for m in module.modules() if isinstance(m, EDMBackbone))
    assert net.net.inner.embed.weight.grad[:, -1].abs().sum() > 0  # the property column gets a gradient
    cond = dm.example_cond(3, torch.Generator().manual_seed(0))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = module.sample(3, sizes=6, cond=cond, generator=g())
    b = module.sample(3, sizes=6, cond={"property": cond["property"] + 3.0}, generator=g())
    assert (a["x"]["pos"] - b["x"]["pos"]).abs().max() > 1e-4  # same noise, another property, another sample


def test_ode_nll_in_nats_of_molecules_in_data_units():
    import math

    from polydiff import ode_nll
    from polydiff.data import pad_collate
    from polydiff.plugins.molecule.data import MoleculeFiles
    from polydiff.plugins.molecule.evaluation import ode_nll_nats

    xyz = require_shared("molecule", "qm9_dft_19_from_schnetpack.xyz")
    dm = MoleculeFiles([str(xyz)], val_fraction=0.0)
    dm.setup()
    torch.manual_seed(0)
    module = DiffusionModule(EDMBackbone(hidden=8, layers=1), parts=PARTS, ema_decay=0, process={
        "class_path": "VP", "init_args": {"schedule": {"class_path": "polydiff.schedules.PolynomialSchedule"}}})
    batch = pad_collate([dm.train_set[i] for i in range(2)])
    nll = ode_nll_nats(module, batch, steps=4)
    flat = module.flat_batch(batch)
    packed = ode_nll(module.sampling_model(), flat["x"], space=module.space, presence=flat["presence"], method="rk4",
                     steps=4, divergence="hutchinson", generator=torch.Generator().manual_seed(0))
    atoms = batch["presence"].sum(1).double()
    jac = atoms * (5 * math.log(0.25) + math.log(0.1))  # data → model units: types × 0.25, charges × 0.1
    assert torch.isfinite(nll).all()
    torch.testing.assert_close(nll, packed.nll.double() + jac, atol=1e-4, rtol=0)
    assert packed.dims.tolist() == (atoms * 9 - 3).tolist()  # zero-CoM: 3 (n − 1) + 6 n degrees of freedom
