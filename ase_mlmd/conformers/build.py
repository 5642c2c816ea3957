"""Start geometries from the molecular graph alone (no RDKit embedding, no force field).

Used by the reference conformer search (:mod:`.search`), so that no generator under test
(ETKDG, ConfVAE) defines where the reference search starts. The construction is a plain
distance-bounds embedding of our own:

1. Target distances from the graph: bonded pairs at the sum of covalent radii (ASE's table;
   shortened by 0.87 for double, 0.78 for triple, 0.91 for aromatic bonds); 1-3 pairs from
   the law of cosines with the ideal angle of the middle atom's hybridisation (sp 180°, sp2
   120°, sp3 109.47°); all other pairs only a lower bound (2.4-3.0 Å heavy-heavy, less with
   hydrogens) and an upper bound (1.6 Å per bond of the shortest path).
2. Random coordinates in a box, then L-BFGS (scipy) on the squared violations of these bounds.
3. Stereo: the result's stereo is read with RDKit (``AssignStereochemistryFrom3D``) and
   compared with the molecule's. A stereo double bond that came out wrong is turned by 180°;
   wrong tetrahedral centres get a signed-volume term (sign set from this first embedding, so
   no chirality convention is assumed) and the bounds are minimised again. A start is taken
   when its stereo is right and its close pairs are exactly the bonds. Several random
   starts are tried; :class:`~ase_mlmd.errors.InvalidMoleculeError` if none has the stereo.

The result is rough (bond lengths within ~0.05 Å, angles within ~10°); the search relaxes it
with the reference method straight away.
"""

from __future__ import annotations

import numpy as np
from ase.data import covalent_radii
from rdkit import Chem
from scipy.optimize import minimize

from ase_mlmd.conformers.molecules import with_positions
from ase_mlmd.errors import InvalidMoleculeError

__all__ = [
    "bonds_match",
    "embed_from_graph",
    "extended_geometry",
    "rotate_about_bond",
    "side_of_bond",
    "stereo_matches",
]

_BOND_SCALE = {
    Chem.BondType.SINGLE: 1.0,
    Chem.BondType.DOUBLE: 0.87,
    Chem.BondType.TRIPLE: 0.78,
    Chem.BondType.AROMATIC: 0.91,
}
_ANGLE = {
    Chem.HybridizationType.SP: np.pi,
    Chem.HybridizationType.SP2: np.deg2rad(120.0),
}


def _bounds(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair list [P, 2], lower and upper distance bounds [P] (Å)."""
    n = mol.GetNumAtoms()
    topo = Chem.GetDistanceMatrix(mol)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    radius = covalent_radii[z]
    bond_len = {}
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        d = (radius[i] + radius[j]) * _BOND_SCALE.get(b.GetBondType(), 0.95)
        bond_len[(i, j)] = bond_len[(j, i)] = d
    ii, jj = np.triu_indices(n, 1)
    lo = np.empty(len(ii))
    hi = np.empty(len(ii))
    for p, (i, j) in enumerate(zip(ii, jj, strict=True)):
        t = topo[i, j]
        if t == 1:
            lo[p] = hi[p] = bond_len[(i, j)]
        elif t == 2:
            nbs = [a.GetIdx() for a in mol.GetAtomWithIdx(int(i)).GetNeighbors()]
            k = next(a for a in nbs if topo[a, j] == 1)
            theta = _ANGLE.get(mol.GetAtomWithIdx(k).GetHybridization(), np.deg2rad(109.47))
            a, b = bond_len[(i, k)], bond_len[(k, j)]
            d = np.sqrt(a * a + b * b - 2 * a * b * np.cos(theta))
            lo[p], hi[p] = d - 0.05, d + 0.05
        else:
            n_h = int(z[i] == 1) + int(z[j] == 1)
            base = (2.5, 2.2, 1.9)[n_h] if t == 3 else (3.0, 2.5, 2.1)[n_h]
            lo[p], hi[p] = base, 1.6 * t
    return np.stack([ii, jj], axis=1), lo, hi


def _objective(
    x: np.ndarray,
    pairs: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    centres: np.ndarray,
    signs: np.ndarray,
) -> tuple[float, np.ndarray]:
    pos = x.reshape(-1, 3)
    diff = pos[pairs[:, 0]] - pos[pairs[:, 1]]
    d = np.linalg.norm(diff, axis=1) + 1e-12
    over = np.maximum(d - hi, 0.0)
    under = np.maximum(lo - d, 0.0)
    f = float((over**2).sum() + (under**2).sum())
    coef = (2 * over - 2 * under) / d
    g = np.zeros_like(pos)
    np.add.at(g, pairs[:, 0], coef[:, None] * diff)
    np.add.at(g, pairs[:, 1], -coef[:, None] * diff)
    if len(centres):
        c = pos[centres[:, 0]]
        u, v, w = (pos[centres[:, k]] - c for k in (1, 2, 3))
        vol = np.einsum("ij,ij->i", u, np.cross(v, w))
        viol = np.maximum(1.0 - signs * vol, 0.0)
        f += float(10.0 * (viol**2).sum())
        dv = (-20.0 * viol * signs)[:, None]
        gu, gv, gw = np.cross(v, w), np.cross(w, u), np.cross(u, v)
        np.add.at(g, centres[:, 1], dv * gu)
        np.add.at(g, centres[:, 2], dv * gv)
        np.add.at(g, centres[:, 3], dv * gw)
        np.add.at(g, centres[:, 0], -dv * (gu + gv + gw))
    return f, g.ravel()


def _relax_bounds(pos, pairs, lo, hi, centres=None, signs=None) -> np.ndarray:
    centres = np.zeros((0, 4), dtype=int) if centres is None else centres
    signs = np.zeros(0) if signs is None else signs
    res = minimize(
        _objective,
        pos.ravel(),
        args=(pairs, lo, hi, centres, signs),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000},
    )
    return res.x.reshape(-1, 3)


def bonds_match(mol: Chem.Mol, positions: np.ndarray, factor: float = 1.25) -> bool:
    """True when the pairs closer than ``factor`` x the sum of covalent radii are exactly the
    bonds of ``mol``."""
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    r = covalent_radii[z]
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    close = d < factor * (r[:, None] + r[None])
    np.fill_diagonal(close, False)
    return bool(np.array_equal(close, Chem.GetAdjacencyMatrix(mol).astype(bool)))


def stereo_matches(mol: Chem.Mol, positions: np.ndarray) -> tuple[list[int], list[int]]:
    """Compare the stereo of ``positions`` with ``mol``'s: (atoms whose CIP label differs,
    bonds whose E/Z differs). Empty lists: the geometry has the molecule's stereo."""
    probe = with_positions(mol, positions)
    Chem.AssignStereochemistryFrom3D(probe)
    ref = Chem.Mol(mol)
    Chem.AssignStereochemistry(ref, cleanIt=True, force=True)
    atoms = [
        a.GetIdx()
        for a, b in zip(ref.GetAtoms(), probe.GetAtoms(), strict=True)
        if a.HasProp("_CIPCode") and a.GetProp("_CIPCode") != b.GetPropsAsDict().get("_CIPCode")
    ]
    bonds = []
    for a, b in zip(ref.GetBonds(), probe.GetBonds(), strict=True):
        if a.GetStereo() in (Chem.BondStereo.STEREONONE, Chem.BondStereo.STEREOANY):
            continue
        if _ez(a) != _ez(b):
            bonds.append(a.GetIdx())
    return atoms, bonds


def _ez(bond: Chem.Bond) -> str:
    """E or Z of a stereo double bond by CIP (RDKit's STEREOE/Z or CIS/TRANS resolved)."""
    stereo = bond.GetStereo()
    if stereo in (Chem.BondStereo.STEREOE, Chem.BondStereo.STEREOZ):
        return "E" if stereo == Chem.BondStereo.STEREOE else "Z"
    return str(stereo)


def side_of_bond(mol: Chem.Mol, i: int, j: int) -> np.ndarray:
    """Atoms on ``j``'s side of the bond ``i``-``j`` (``j`` included), for a bond in no ring."""
    seen = {j}
    stack = [j]
    while stack:
        a = stack.pop()
        for nb in mol.GetAtomWithIdx(a).GetNeighbors():
            k = nb.GetIdx()
            if k not in seen and not (a == j and k == i):
                seen.add(k)
                stack.append(k)
    return np.array(sorted(seen), dtype=int)


def rotate_about_bond(
    positions: np.ndarray, i: int, j: int, moving: np.ndarray, angle: float
) -> np.ndarray:
    """Positions with the atoms ``moving`` turned by ``angle`` (rad) about the axis i->j."""
    axis = positions[j] - positions[i]
    axis = axis / np.linalg.norm(axis)
    rel = positions[moving] - positions[j]
    c, s = np.cos(angle), np.sin(angle)
    rot = rel * c + np.cross(axis, rel) * s + np.outer(rel @ axis, axis) * (1 - c)
    out = positions.copy()
    out[moving] = rot + positions[j]
    return out


def embed_from_graph(mol: Chem.Mol, rng: np.random.Generator, attempts: int = 20) -> np.ndarray:
    """Coordinates [n_atoms, 3] (Å) of ``mol`` (explicit hydrogens) built from its graph by the
    distance-bounds construction of the module docstring, with the molecule's stereo.

    Raises:
        InvalidMoleculeError: no start with the right stereo in ``attempts`` tries.
    """
    pairs, lo, hi = _bounds(mol)
    n = mol.GetNumAtoms()
    box = 1.5 * n ** (1 / 3) + 1.0
    for _ in range(attempts):
        pos = _relax_bounds(rng.uniform(-box, box, size=(n, 3)), pairs, lo, hi)
        bad_atoms, bad_bonds = stereo_matches(mol, pos)
        for b in bad_bonds:
            bond = mol.GetBondWithIdx(b)
            i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            if not bond.IsInRing():
                pos = rotate_about_bond(pos, i, j, side_of_bond(mol, i, j), np.pi)
        if bad_atoms or bad_bonds:
            centres, signs = _chiral_terms(mol, pos, set(bad_atoms))
            pos = _relax_bounds(pos, pairs, lo, hi, centres, signs)
            bad_atoms, bad_bonds = stereo_matches(mol, pos)
        if not bad_atoms and not bad_bonds and bonds_match(mol, pos):
            return pos
    raise InvalidMoleculeError(
        f"could not build a start geometry with the stereo of {Chem.MolToSmiles(mol)} in "
        f"{attempts} attempts"
    )


def _chiral_terms(mol: Chem.Mol, pos: np.ndarray, wrong: set[int]):
    """Signed-volume restraints for every tetrahedral centre: keep the handedness of the
    centres that are right, flip it for those in ``wrong``. For four neighbours n0..n3 all
    four faces are restrained (signs t, -t, t, -t for (n0 n1 n2), (n1 n2 n3), (n0 n2 n3),
    (n0 n1 n3)): the centre then lies inside its neighbours' tetrahedron."""
    centres, signs = [], []
    for atom in mol.GetAtoms():
        if atom.GetChiralTag() == Chem.ChiralType.CHI_UNSPECIFIED or atom.GetDegree() < 3:
            continue
        nbs = [a.GetIdx() for a in atom.GetNeighbors()]
        c = atom.GetIdx()
        vol = np.dot(pos[nbs[0]] - pos[c], np.cross(pos[nbs[1]] - pos[c], pos[nbs[2]] - pos[c]))
        t = np.sign(vol) or 1.0
        t = -t if c in wrong else t
        faces = [((0, 1, 2), t)]
        if len(nbs) == 4:
            faces += [((1, 2, 3), -t), ((0, 2, 3), t), ((0, 1, 3), -t)]
        for face, sign in faces:
            centres.append([c, *(nbs[k] for k in face)])
            signs.append(sign)
    return np.array(centres, dtype=int).reshape(-1, 4), np.array(signs, dtype=float)


def _dihedral(p: np.ndarray, a: int, b: int, c: int, d: int) -> float:
    b0, b1, b2 = p[a] - p[b], p[c] - p[b], p[d] - p[c]
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return float(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w)))


def extended_geometry(
    mol: Chem.Mol, positions: np.ndarray, torsions: list[tuple[int, int, np.ndarray]]
) -> np.ndarray:
    """``positions`` with every torsion (i, j, atoms on j's side) turned so that the dihedral
    of the heaviest neighbours a-i-j-b is 180° (all-anti chains, planar conjugated rotors):
    one systematic start of the conformer search besides the random kicks."""
    pos = positions.copy()
    z = [a.GetAtomicNum() for a in mol.GetAtoms()]
    for i, j, side in torsions:
        ni = [n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors() if n.GetIdx() != j]
        nj = [n.GetIdx() for n in mol.GetAtomWithIdx(j).GetNeighbors() if n.GetIdx() != i]
        if not ni or not nj:
            continue
        a = max(ni, key=lambda k: (z[k], -k))
        b = max(nj, key=lambda k: (z[k], -k))
        turn = np.pi - _dihedral(pos, a, i, j, b)
        trial = rotate_about_bond(pos, i, j, side, turn)
        if abs(abs(_dihedral(trial, a, i, j, b)) - np.pi) > 1e-3:
            trial = rotate_about_bond(pos, i, j, side, -turn)
        pos = trial
    return pos
