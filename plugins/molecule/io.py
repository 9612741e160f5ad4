"""Molecule files with RDKit: SDF, MOL2 (read), XYZ (multi-record), SMILES (.smi/.txt/.csv) in; SDF, XYZ, SMILES out.

Readers never stop at a bad record: each unparsable record is reported with its record number and first line,
the rest of the file is read, and :class:`ReadReport` carries the molecules, the errors and a one-line summary
(``"read 18 of 19 records from x.sdf; 1 failed"``). Writers are atomic (:mod:`polydiff.io`).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from polydiff.errors import DataError
from polydiff.io import atomic_write_text

SDF_SUFFIXES = (".sdf", ".sd", ".mol")
XYZ_SUFFIXES = (".xyz",)
SMILES_SUFFIXES = (".smi", ".smiles", ".txt", ".csv")
MOL2_SUFFIXES = (".mol2",)


@dataclass
class RecordError:
    """One record that could not be read: its number (1-based), its first line in the file, and why."""

    record: int
    line: int
    message: str

    def __str__(self) -> str:
        return f"record {self.record} (line {self.line}): {self.message}"


@dataclass
class ReadReport:
    """What a reader got from ``path``: the molecules (RDKit ``Mol``), their record numbers, and the errors."""

    path: str
    mols: list = field(default_factory=list)
    records: list[int] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.mols) + len(self.errors)

    def summary(self) -> str:
        return f"read {len(self.mols)} of {self.total} records from {self.path}; {len(self.errors)} failed"

    def raise_if_empty(self) -> "ReadReport":
        if not self.mols:
            detail = "; ".join(map(str, self.errors[:3]))
            raise DataError(f"{self.path}: no molecule could be read ({self.summary()}){': ' + detail if detail else ''}")
        return self


class quiet_rdkit:
    """Silence RDKit's own stderr messages while a reader turns failures into :class:`RecordError`s (nestable)."""

    depth = 0

    def __enter__(self):
        from rdkit import RDLogger

        if quiet_rdkit.depth == 0:
            RDLogger.DisableLog("rdApp.*")
        quiet_rdkit.depth += 1

    def __exit__(self, *exc):
        from rdkit import RDLogger

        quiet_rdkit.depth -= 1
        if quiet_rdkit.depth == 0:
            RDLogger.EnableLog("rdApp.*")


def _blocks(lines: list[str], is_end) -> Iterable[tuple[int, int, str]]:
    """(record number, first line number, text) of the records of a file split after each ``is_end`` line."""
    start, rec = 0, 0
    for i, line in enumerate(lines):
        if is_end(line):
            rec += 1
            yield rec, start + 1, "".join(lines[start:i + 1])
            start = i + 1
    if any(line.strip() for line in lines[start:]):
        yield rec + 1, start + 1, "".join(lines[start:])


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path.read_text(errors="replace").splitlines(keepends=True)


def read_sdf(path: str | Path, sanitize: bool = True) -> ReadReport:
    """Every record of an SD file (explicit hydrogens kept, ``> <name>`` properties as RDKit props)."""
    from rdkit import Chem

    path = Path(path)
    report = ReadReport(str(path))
    with quiet_rdkit():
        for rec, line, text in _blocks(_lines(path), lambda s: s.strip() == "$$$$"):
            try:
                supplier = Chem.SDMolSupplier()
                supplier.SetData(text, sanitize=sanitize, removeHs=False)
                mol = supplier[0] if len(supplier) else None
            except Exception as exc:  # noqa: BLE001 - RDKit raises RuntimeError/ValueError/... on odd input
                mol, why = None, f": {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            else:
                why = ""
            if mol is None:
                report.errors.append(RecordError(rec, line, f"RDKit could not parse the mol block{why}"))
                continue
            report.mols.append(mol)
            report.records.append(rec)
    return report


def read_mol2(path: str | Path, sanitize: bool = True) -> ReadReport:
    """Every ``@<TRIPOS>MOLECULE`` record of a MOL2 file (RDKit's Tripos reader)."""
    from rdkit import Chem

    path = Path(path)
    lines = _lines(path)
    starts = [i for i, s in enumerate(lines) if s.strip().upper() == "@<TRIPOS>MOLECULE"]
    report = ReadReport(str(path))
    if not starts:
        report.errors.append(RecordError(1, 1, "no @<TRIPOS>MOLECULE record"))
        return report
    with quiet_rdkit():
        for rec, (a, b) in enumerate(zip(starts, starts[1:] + [len(lines)]), start=1):
            try:
                mol = Chem.MolFromMol2Block("".join(lines[a:b]), sanitize=sanitize, removeHs=False)
            except Exception:  # noqa: BLE001 - RDKit raises several types on odd input
                mol = None
            if mol is None:
                report.errors.append(RecordError(rec, a + 1, "RDKit could not parse the MOL2 record"))
                continue
            report.mols.append(mol)
            report.records.append(rec)
    return report


def read_xyz(path: str | Path, bonds: str | None = None, charge: int = 0) -> ReadReport:
    """Every record of a (multi-record) XYZ file: an atom count, a comment line, then ``element x y z`` lines.
    The molecules have atoms and coordinates only; ``bonds="rdkit"`` adds bonds with ``rdDetermineBonds``
    (``charge`` = total charge of every record; a record without a valid assignment is reported)."""
    from rdkit import Chem

    path = Path(path)
    lines = _lines(path)
    report = ReadReport(str(path))
    i, rec = 0, 0
    with quiet_rdkit():
        while i < len(lines):
            if not lines[i].strip():
                i += 1
                continue
            rec += 1
            start = i
            try:
                n = int(lines[i].split()[0])
                if n < 1:
                    raise ValueError
            except (ValueError, IndexError):
                report.errors.append(RecordError(rec, start + 1, f"expected an atom count, got {lines[i].strip()!r}"))
                i += 1  # resynchronise on the next line that is a bare integer
                while i < len(lines) and not re.fullmatch(r"\s*\d+\s*", lines[i]):
                    i += 1
                continue
            block = lines[i:i + n + 2]
            i += n + 2
            atoms = [s.split() for s in block[2:]]
            bad = next((k for k, a in enumerate(atoms) if len(a) < 4 or not _floats(a[1:4])), None)
            if len(block) < n + 2 or bad is not None:
                where = start + 3 + (bad if bad is not None else len(atoms))
                report.errors.append(RecordError(rec, start + 1, f"line {where}: expected 'element x y z' "
                                                                  f"({n} atom lines)"))
                continue
            text = f"{n}\n{block[1].strip()}\n" + "".join(f"{a[0]} {a[1]} {a[2]} {a[3]}\n" for a in atoms)
            try:
                mol = Chem.MolFromXYZBlock(text)
            except Exception:  # noqa: BLE001
                mol = None
            if mol is None:
                report.errors.append(RecordError(rec, start + 1, "RDKit could not read the atoms (unknown element?)"))
                continue
            if bonds == "rdkit":
                from rdkit.Chem import rdDetermineBonds

                try:
                    rdDetermineBonds.DetermineBonds(mol, charge=charge)
                except (ValueError, RuntimeError) as exc:
                    report.errors.append(RecordError(rec, start + 1, f"no bond assignment: {exc}"))
                    continue
            mol.SetProp("_Name", block[1].strip())
            report.mols.append(mol)
            report.records.append(rec)
    return report


def _floats(values: Sequence[str]) -> bool:
    try:
        [float(v) for v in values]
        return True
    except ValueError:
        return False


def read_smiles_list(path: str | Path, column: str = "smiles") -> tuple[list[tuple[int, str]], list[RecordError]]:
    """SMILES strings with their line numbers, unparsed: a CSV with a ``column`` header (case-insensitive), or a
    ``.smi``/``.txt`` file of one SMILES per line (anything after whitespace is a name). Blank lines are skipped."""
    path = Path(path)
    lines = _lines(path)
    out, errors = [], []
    if path.suffix.lower() == ".csv":
        reader = csv.reader(io.StringIO("".join(lines)))
        header = next(reader, None) or []
        names = [h.strip().lower() for h in header]
        if column.lower() not in names:
            raise DataError(f"{path}: no column {column!r} in the header {header}")
        k = names.index(column.lower())
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) <= k or not row[k].strip():
                errors.append(RecordError(lineno - 1, lineno, f"no value in column {column!r}"))
                continue
            out.append((lineno, row[k].strip()))
    else:
        for lineno, line in enumerate(lines, start=1):
            text = line.strip()
            if text and not text.startswith("#"):
                out.append((lineno, text.split()[0]))
    return out, errors


def read_smiles(path: str | Path, column: str = "smiles", add_hs: bool = True) -> ReadReport:
    """Molecules (2D, hydrogens added) from a SMILES list; an unparsable SMILES is reported by line."""
    from rdkit import Chem

    entries, errors = read_smiles_list(path, column)
    report = ReadReport(str(path), errors=list(errors))
    with quiet_rdkit():
        for rec, (line, smi) in enumerate(entries, start=1):
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                report.errors.append(RecordError(rec, line, f"unparsable SMILES {smi!r}"))
                continue
            mol = Chem.AddHs(mol) if add_hs else mol
            mol.SetProp("_Name", smi)
            report.mols.append(mol)
            report.records.append(rec)
    return report


def read_molecules(path: str | Path, **kw) -> ReadReport:
    """Dispatch on the suffix: SDF (``.sdf``/``.sd``/``.mol``), MOL2, XYZ, SMILES (``.smi``/``.txt``/``.csv``)."""
    name = str(path).lower()
    for suffixes, fn in ((SDF_SUFFIXES, read_sdf), (MOL2_SUFFIXES, read_mol2), (XYZ_SUFFIXES, read_xyz),
                         (SMILES_SUFFIXES, read_smiles)):
        if name.endswith(suffixes):
            return fn(path, **kw)
    raise DataError(f"{path}: unknown molecule file type; expected one of "
                    f"{SDF_SUFFIXES + MOL2_SUFFIXES + XYZ_SUFFIXES + SMILES_SUFFIXES}")


# -- writers -------------------------------------------------------------------------------------------------
def sdf_text(mols: Sequence, names: Sequence[str] | None = None) -> str:
    """An SD file's text for RDKit molecules (all their conformers, one record each); ``None`` entries skipped."""
    from rdkit import Chem

    buf = io.StringIO()
    writer = Chem.SDWriter(buf)
    writer.SetKekulize(False)  # an unsanitised generated molecule is written as it is
    for i, mol in enumerate(mols):
        if mol is None:
            continue
        if names is not None:
            mol.SetProp("_Name", str(names[i]))
        mol.UpdatePropertyCache(strict=False)  # an unsanitised (generated) molecule has no valences computed yet
        confs = [c.GetId() for c in mol.GetConformers()] or [-1]
        for cid in confs:
            writer.write(mol, confId=cid)
    writer.close()
    return buf.getvalue()


def write_sdf(mols: Sequence, path: str | Path, names: Sequence[str] | None = None) -> Path:
    return atomic_write_text(path, sdf_text(mols, names))


def write_xyz(mols: Sequence, path: str | Path) -> Path:
    """One XYZ record per molecule (first conformer)."""
    parts = []
    for mol in mols:
        if mol is None:
            continue
        pos = mol.GetConformer().GetPositions()
        name = mol.GetProp("_Name") if mol.HasProp("_Name") else ""
        parts.append(f"{mol.GetNumAtoms()}\n{name}\n" + "".join(
            f"{a.GetSymbol()} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}\n" for a, p in zip(mol.GetAtoms(), pos)))
    return atomic_write_text(path, "".join(parts))


def write_smiles(smiles: Sequence[str], path: str | Path) -> Path:
    return atomic_write_text(path, "".join(f"{s}\n" for s in smiles))
