"""Reading protein backbones from PDB and mmCIF files with Biopython.

A :class:`Backbone` is the N, CA, C coordinates of one chain of the first model, residue by residue, with
the residue names and ids it came from and a report of everything that was not taken at face value:

* alternate locations: Biopython keeps the highest-occupancy altloc of every disordered atom (and the
  highest-occupancy residue of a point-mutation site); each such residue is reported;
* insertion codes (e.g. 27A after 27): kept in file order, reported;
* selenomethionine (MSE, a HETATM record) is read as methionine and reported;
* other non-standard amino acids, residues without a complete N/CA/C triple, and chain breaks (C_i–N_{i+1}
  distance above 2 Å): with ``strict=True`` each is a :class:`polydiff.DataError` naming the file and the
  residue; otherwise the chain is cut there into segments (:func:`read_segments`) and each cut is reported;
* files with several models: the first model is used and that is reported.

Waters and ligands (HETATM groups that are not amino acids) are not part of the chain; their count is
reported. Biopython is imported only inside the functions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polydiff import DataError

#: The twenty standard amino acids (PDB three-letter codes) and their one-letter codes.
STANDARD = {"ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
            "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
            "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V"}
#: Non-standard residues read as a standard one (reported): selenomethionine -> methionine.
SUBSTITUTE = {"MSE": "MET"}
#: Residue names that are never part of a chain's backbone (solvent).
WATER = {"HOH", "WAT", "DOD", "H2O"}
#: C_i–N_{i+1} distance above which two consecutive residues are not bonded (peptide bond ≈ 1.33 Å).
BREAK_DISTANCE = 2.0
PDB_SUFFIXES = (".pdb", ".ent", ".pdb1")
CIF_SUFFIXES = (".cif", ".mmcif")
SUFFIXES = PDB_SUFFIXES + CIF_SUFFIXES + tuple(s + ".gz" for s in PDB_SUFFIXES + CIF_SUFFIXES)


@dataclass
class Backbone:
    """Backbone of one chain: ``coords`` (L, 3, 3) float64 with atoms N, CA, C; residue names and labels
    (``"A:27"``, ``"A:27A"`` with an insertion code); ``notes``: what was reported while reading."""

    coords: np.ndarray
    resnames: list[str]
    labels: list[str]
    source: str
    chain: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def sequence(self) -> str:
        return "".join(STANDARD.get(r, "X") for r in self.resnames)

    def slice(self, start: int, stop: int) -> "Backbone":
        return Backbone(self.coords[start:stop], self.resnames[start:stop], self.labels[start:stop],
                        self.source, self.chain, list(self.notes))


def _label(chain_id: str, res) -> str:
    _, num, icode = res.get_id()
    return f"{chain_id}:{num}{icode.strip()}"


def _open_text(path: Path):
    import gzip
    import io

    if path.name.lower().endswith(".gz"):
        return io.StringIO(gzip.open(path, "rt", errors="replace").read())
    return str(path)


def _structure(path: Path):
    """Parse a file into a Biopython Structure (format from the suffix; content sniffed for unknown ones)."""
    from Bio.PDB import MMCIFParser, PDBParser

    name = path.name.lower().removesuffix(".gz")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    is_cif = name.endswith(CIF_SUFFIXES)
    if not name.endswith(SUFFIXES):
        head = path.read_bytes()[:2048].decode("latin-1")
        is_cif = head.lstrip().startswith("data_")
    parser = MMCIFParser(QUIET=True) if is_cif else PDBParser(QUIET=True, PERMISSIVE=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return parser.get_structure(path.stem, _open_text(path))
    except Exception as exc:  # Biopython raises many types (ValueError, KeyError, PDBConstructionException)
        kind = "mmCIF" if is_cif else "PDB"
        raise DataError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {exc})") from None


def _protein_chains(model) -> list:
    chains = []
    for ch in model:
        if any(r.get_resname() in STANDARD or r.get_resname() in SUBSTITUTE for r in ch):
            chains.append(ch)
    return chains


def read_segments(path: str | Path, chain: str | None = None, strict: bool = False) -> list[Backbone]:
    """Backbone segments of one chain of the first model of a PDB/mmCIF file.

    Args:
        path: the file (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``, optionally ``.gz``).
        chain: chain id; default the first chain that holds amino acids.
        strict: raise :class:`DataError` (naming file and residue) at a chain break, an incomplete backbone
            or a non-standard residue instead of cutting the chain there.

    Returns:
        The chain cut at every break/unusable residue into contiguous segments (one segment for a clean
        chain); every segment carries the same ``notes`` (what was reported).
    """
    path = Path(path)
    structure = _structure(path)
    models = list(structure)
    if not models or not any(True for _ in models[0].get_atoms()):
        raise DataError(f"{path}: no atoms found (is this a PDB/mmCIF file?)")
    notes: list[str] = []
    if len(models) > 1:
        notes.append(f"{path.name}: {len(models)} models; using the first (model {models[0].serial_num})")
    model = models[0]
    chains = _protein_chains(model)
    if chain is not None:
        chains = [c for c in chains if c.id == chain]
        if not chains:
            have = [c.id for c in _protein_chains(model)]
            raise DataError(f"{path}: no protein chain {chain!r} in the first model; protein chains: {have}")
    if not chains:
        raise DataError(f"{path}: no amino-acid residues in the first model (no protein backbone)")
    ch = chains[0]
    cid = ch.id

    segments: list[list[tuple]] = [[]]
    ligands = 0

    def cut(reason: str) -> None:
        if strict:
            raise DataError(f"{path}: {reason}")
        notes.append(f"{path.name}: {reason}; chain cut there")
        if segments[-1]:
            segments.append([])

    for res in ch:
        name = res.get_resname().strip()
        hetflag = res.get_id()[0]
        label = _label(cid, res)
        if name in WATER or (hetflag.startswith("H_") and name not in SUBSTITUTE and name not in STANDARD
                             and not all(a in res for a in ("N", "CA", "C"))):
            ligands += name not in WATER
            continue
        if name in SUBSTITUTE:
            notes.append(f"{path.name}: residue {label} {name} read as {SUBSTITUTE[name]}")
            name = SUBSTITUTE[name]
        elif name not in STANDARD:
            cut(f"non-standard residue {name} at {label} (expected one of the 20 standard amino acids or MSE)")
            continue
        missing = [a for a in ("N", "CA", "C") if a not in res]
        if missing:
            cut(f"residue {label} {name} lacks backbone atom(s) {', '.join(missing)}")
            continue
        if res.is_disordered():
            alts = sorted({a.get_altloc() for a in res.get_unpacked_list() if a.get_altloc().strip()})
            notes.append(f"{path.name}: residue {label} has alternate locations {alts}; the highest-occupancy "
                         "one is used")
        if res.get_id()[2].strip():
            notes.append(f"{path.name}: residue {label} has insertion code {res.get_id()[2]!r}; kept in file order")
        xyz = np.stack([res[a].get_coord() for a in ("N", "CA", "C")]).astype(np.float64)
        seg = segments[-1]
        if seg:
            gap = float(np.linalg.norm(xyz[0] - seg[-1][0][2]))
            if gap > BREAK_DISTANCE:
                cut(f"chain break of {gap:.1f} Å between {seg[-1][2]} and {label} (C–N > {BREAK_DISTANCE} Å)")
        segments[-1].append((xyz, name, label))
    if ligands:
        notes.append(f"{path.name}: {ligands} non-polymer group(s) in chain {cid} ignored")
    out = [Backbone(np.stack([r[0] for r in seg]), [r[1] for r in seg], [r[2] for r in seg], str(path), cid, notes)
           for seg in segments if seg]
    if not out:
        raise DataError(f"{path}: chain {cid} has no residue with a complete N/CA/C backbone")
    return out


def read_backbone(path: str | Path, chain: str | None = None) -> Backbone:
    """The one continuous backbone of a chain (strict: any break or unusable residue is a DataError)."""
    return read_segments(path, chain=chain, strict=True)[0]


def find_structure_files(root: str | Path) -> list[Path]:
    """PDB/mmCIF files under a folder (recursively), sorted; a single file is returned as is."""
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder of PDB/mmCIF files")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(SUFFIXES))
    if not files:
        raise DataError(f"{root}: holds no PDB/mmCIF files (expected suffixes {', '.join(SUFFIXES[:4])}, ...)")
    return files
