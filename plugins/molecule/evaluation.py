"""The field's metrics for generated 3D molecules (keys ``molecule/<metric>``), computed by one function for samples
and for reference geometries alike.

* ``atom_stability`` / ``mol_stability`` — an atom is stable when the sum of its bond orders, read off the
  interatomic distances with EDM's bond-length table and margins, is an allowed valence; a molecule when all its
  atoms are (Hoogeboom et al. 2022, §5.2; :func:`.chem.atom_stability`).
* ``validity`` — the molecule built from the same bonds (EDM's ``build_molecule``) passes RDKit sanitisation
  (EDM's definition: fragments allowed; the largest fragment gives the SMILES); ``validity_largest_fragment`` —
  the largest fragment alone sanitises; ``connected`` — valid and a single fragment.
* ``uniqueness`` — distinct canonical SMILES among the valid molecules / valid; ``valid_unique`` — distinct
  valid / all (EDM's "valid and unique"); ``novelty`` — distinct valid SMILES absent from the training set /
  distinct valid (Hoogeboom et al. 2022, Table 2; canonical SMILES without hydrogens).
* ``pb/<check>`` — PoseBusters' checks for a lone molecule (Buttenschoen et al. 2024, Chem. Sci. 15:3130): the
  fraction of the valid molecules passing each check, and ``pb/all`` the fraction passing all of them;
  ``pb/all_of_samples`` the same over all samples (an invalid molecule fails). Default ``mol_fast`` (every ``mol``
  check but the internal-energy ratio, which embeds 50 conformers per molecule: ~1.8 s per QM9 molecule on
  one core); ``posebusters="mol"`` adds it.

Novelty compares with training SMILES made by the same code from the training geometries (EDM does the same), so
that a training molecule counts as not novel whatever stereo or charge notation its source SMILES had.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from polydiff.errors import ConfigError

from .chem import atom_stability, build_mol, decode_atoms
from .io import quiet_rdkit


def _sanitized(mol):
    """(sanitised whole molecule or None, largest fragment SMILES or None, largest fragment sanitises, fragments)."""
    from rdkit import Chem

    frags_raw = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    largest = max(frags_raw, key=lambda m: m.GetNumAtoms()) if frags_raw else None
    frag_ok = False
    if largest is not None:
        lf = Chem.Mol(largest)
        try:
            Chem.SanitizeMol(lf)
            frag_ok = True
        except Exception:  # noqa: BLE001 - RDKit's sanitisation errors have several types
            pass
    whole = Chem.Mol(mol)
    try:
        Chem.SanitizeMol(whole)
    except Exception:  # noqa: BLE001
        return None, None, frag_ok, len(frags_raw)
    frags = Chem.GetMolFrags(whole, asMols=True)
    big = max(frags, key=lambda m: m.GetNumAtoms())
    try:
        smi = Chem.MolToSmiles(Chem.RemoveHs(big))
    except Exception:  # noqa: BLE001
        smi = Chem.MolToSmiles(big)
    return whole, smi, frag_ok, len(frags)


def posebusters_table(mols: Sequence, config: str = "mol_fast") -> dict[str, float]:
    """Fraction of ``mols`` passing each PoseBusters check of ``config`` (``mol_fast`` or ``mol``) and all of them
    (``pb/all``)."""
    if config not in ("mol", "mol_fast"):
        raise ConfigError(f"posebusters config {config!r}; expected 'mol_fast' or 'mol' (a lone molecule)")
    if not mols:
        return {}
    from posebusters import PoseBusters

    df = PoseBusters(config=config).bust(list(mols), None, None, full_report=False)
    checks = [c for c in df.columns if df[c].dtype == bool]
    out = {f"pb/{c}": float(df[c].mean()) for c in checks}
    out["pb/all"] = float(df[checks].all(axis=1).mean())
    return out


def smiles_of(molecules: Iterable[Mapping[str, Any]], use_charges: bool = True) -> list[str | None]:
    """Canonical SMILES (largest fragment, no hydrogens) of molecules rebuilt from their geometry, None if invalid."""
    out = []
    with quiet_rdkit():
        for m in molecules:
            _, smi, _, _ = _sanitized(build_mol(m["pos"], m["elements"], m.get("charges") if use_charges else None))
            out.append(smi)
    return out


def molecule_metrics(molecules: Iterable[Mapping[str, Any]], train_smiles: Iterable[str] | None = None,
                     posebusters: str | None = "mol_fast", use_charges: bool = True) -> tuple[dict[str, float], list]:
    """Metrics of molecules given as ``{"pos" (n, 3) Å, "elements" [str], "charges" [int]}`` (see the module
    docstring); returns (metrics with keys ``molecule/<name>``, the built RDKit molecules — sanitised where valid,
    else as built). ``use_charges`` False ignores formal charges (EDM's protocol, which has none);
    ``posebusters``: the PoseBusters config (``mol_fast``, ``mol``) or None for none."""
    molecules = list(molecules)
    if not molecules:
        raise ConfigError("molecule_metrics needs at least one molecule")
    with quiet_rdkit():
        return _metrics(molecules, train_smiles, posebusters, use_charges)


def _metrics(molecules, train_smiles, posebusters, use_charges):
    atoms_stable = atoms_total = mols_stable = 0
    valid_smiles, valid_mols, built = [], [], []
    frag_valid = connected = 0
    for m in molecules:
        charges = m.get("charges") if use_charges else None
        st = atom_stability(m["pos"], m["elements"], charges)
        atoms_stable += int(st.sum())
        atoms_total += len(st)
        mols_stable += int(st.all())
        mol = build_mol(m["pos"], m["elements"], charges)
        whole, smi, frag_ok, nfrag = _sanitized(mol)
        frag_valid += int(frag_ok)
        if whole is not None:
            valid_smiles.append(smi)
            valid_mols.append(whole)
            connected += int(nfrag == 1)
        built.append(whole if whole is not None else mol)
    n = len(molecules)
    unique = set(valid_smiles)
    out = {
        "molecule/atom_stability": atoms_stable / max(atoms_total, 1),
        "molecule/mol_stability": mols_stable / n,
        "molecule/validity": len(valid_smiles) / n,
        "molecule/validity_largest_fragment": frag_valid / n,
        "molecule/connected": connected / n,
        "molecule/uniqueness": len(unique) / len(valid_smiles) if valid_smiles else 0.0,
        "molecule/valid_unique": len(unique) / n,
    }
    if train_smiles is not None:
        train = set(train_smiles)
        out["molecule/novelty"] = len(unique - train) / len(unique) if unique else 0.0
    if posebusters:
        pb = posebusters_table(valid_mols, posebusters)
        out.update({f"molecule/{k}": v for k, v in pb.items()})
        out["molecule/pb/all_of_samples"] = pb.get("pb/all", 0.0) * len(valid_mols) / n
    return out, built


def atom_types_of(datamodule, samples: Mapping[str, Any]) -> tuple[str, ...]:
    """The element vocabulary: the data module's, or QM9's when the samples have its five types and no data
    module is at hand."""
    types = getattr(datamodule, "atom_types", None)
    if types is not None:
        return tuple(types)
    from .chem import QM9_ATOM_TYPES

    width = samples["x"]["types"].shape[-1]
    if width == len(QM9_ATOM_TYPES):
        print("polydiff molecule: no data module; assuming QM9's atom types H, C, N, O, F", file=sys.stderr)
        return QM9_ATOM_TYPES
    raise ConfigError(f"samples have {width} atom types and no data module names them (pass --config with data:)")


def samples_to_atoms(samples: Mapping[str, Any], atom_types: Sequence[str], datamodule=None) -> list[dict]:
    """Generated molecules as atoms; with a data module, sizes above its largest training molecule are an error."""
    x = samples.get("x")
    if not isinstance(x, Mapping) or "pos" not in x or "types" not in x:
        raise ConfigError("molecule samples need x = {'pos', 'types'[, 'charges']} (a state of parts)")
    atoms = decode_atoms(dict(x), samples.get("presence"), atom_types)
    if datamodule is not None and hasattr(datamodule, "check_sizes"):
        datamodule.check_sizes([len(a["elements"]) for a in atoms])
    return atoms


def training_atoms(datamodule, n: int) -> list[dict]:
    """The first ``n`` training molecules as atoms (for the reference row of the metrics)."""
    types = datamodule.atom_types
    return [{"pos": a["pos"], "elements": [types[i] for i in a["types"]], "charges": a["charges"].tolist()}
            for a in datamodule.training_molecules(n)]


def ode_nll_nats(module, batch: Mapping[str, Any], steps: int = 50, seed: int = 0) -> "torch.Tensor":
    """−log p(x) in nats per molecule of the trained model, in data units, with the engine's probability-flow ODE
    likelihood (:func:`polydiff.ode_nll`: RK4 with ``steps`` steps, Hutchinson trace, dimensions = the zero-CoM
    subspace's degrees of freedom). The packed state is the data times the parts' scales, so the log-Jacobian
    Σ log scale over each molecule's present entries is added back. Note: this is the density of the continuous
    representation (one-hot types and charges as real features), not EDM's variational bound with its
    categorical/integer decoders (Hoogeboom et al. 2022, §3.3), so it is comparable between models of this
    representation only."""
    import torch

    from polydiff import ode_nll

    flat = module.flat_batch(batch)
    x, presence = flat["x"], flat.get("presence")
    x = x.to(module.device, module.dtype)
    presence = presence.to(module.device) if presence is not None else None
    res = ode_nll(module.sampling_model(), x, space=module.space, presence=presence, cond=flat.get("cond"),
                  method="rk4", steps=steps, divergence="hutchinson",
                  generator=torch.Generator(device=module.device).manual_seed(seed))
    scales = torch.cat([torch.full((p.features,), float(p.scale)) for k, p in module.structure.parts.items()
                        if k in module.structure.continuous]).to(torch.float64)
    mask = presence.expand_as(x).to(torch.float64) if presence is not None else torch.ones_like(x, dtype=torch.float64)
    log_jac = (mask.cpu() * torch.log(scales)).flatten(1).sum(1)
    return res.nll.cpu().to(torch.float64) + log_jac


def evaluate_samples(samples: Mapping[str, Any], datamodule, context: Mapping[str, Any] | None = None) -> dict[str, float]:
    """``polydiff evaluate``: metrics of the samples, and the same metrics of as many training geometries under
    ``molecule/train/…`` (what the model could reach on this data)."""
    context = dict(context or {})
    types = atom_types_of(datamodule, samples)
    atoms = samples_to_atoms(samples, types, datamodule)
    train = datamodule.training_smiles() if hasattr(datamodule, "training_smiles") else None
    pb = context.get("posebusters", "mol_fast")
    metrics, _ = molecule_metrics(atoms, train if train else None, posebusters=pb)
    if datamodule is not None and hasattr(datamodule, "training_molecules"):
        ref, _ = molecule_metrics(training_atoms(datamodule, len(atoms)), None, posebusters=pb)
        metrics.update({k.replace("molecule/", "molecule/train/", 1): v for k, v in ref.items()})
    n_nll = int(context.get("nll_molecules", 0))
    if n_nll > 0 and context.get("module") is not None and datamodule is not None:
        nll = ode_nll_nats(context["module"], datamodule.reference_data(n_nll))
        metrics["molecule/val/nll_ode_nats"] = float(nll.mean())
    return metrics
