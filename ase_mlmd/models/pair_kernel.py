"""Compiled pair loop for analytic pair potentials on the CPU: one pass over the pairs per call.

The torch form of the analytic path (:mod:`ase_mlmd.models.pair_direct`) makes a dozen
elementwise passes over the pair arrays and several scatters, each a separate trip through
memory. Here one loop (compiled by numba, serial, deterministic) reads each pair once: its
vector from the positions, integer image shift and cell, φ and −φ'(r)/r of its potential, and
adds the force to both atoms (half list) or the centre (full list), half of φ to the atoms'
energies and, if asked, the pair's virial to its system. This is how MD codes such as LAMMPS
evaluate pair styles; the results equal the torch path to rounding.

A potential enters the loop as a row of numbers (:class:`KernelTable`): its kind (Lennard-Jones
n-m, Morse, Yukawa, soft sphere), its cutoff treatment and its parameters. A mixture of
species-pair potentials is several rows and an element → species → row table. Potentials
without a row (splines, neural pair potentials, subclasses that change φ) stay on the torch
path.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np
import torch

from ase_mlmd.batch import AtomsBatch

KIND_LENNARD_JONES, KIND_MORSE, KIND_YUKAWA, KIND_SOFT_SPHERE = 0, 1, 2, 3
MODE_NONE, MODE_SHIFT, MODE_SMOOTH = 0, 1, 2
MODES = {"none": MODE_NONE, "shift": MODE_SHIFT, "smooth": MODE_SMOOTH}
ROW_SIZE = 9  # kind, mode, r_c, r_on, p0, p1, p2, p3, φ(r_c)


def kernel_row(
    kind: int, cutoff_mode: str, cutoff: float, r_on: float, params: tuple[float, ...]
) -> np.ndarray:
    """One potential as a (9,) row: kind, cutoff mode, r_c (Å), r_on (Å), up to four
    parameters (Lennard-Jones: C ε, σ, n, m; Morse: ε, ρ0, r0; Yukawa: A, κ; soft sphere: ε, σ,
    n) and φ(r_c) (eV, subtracted for ``"shift"``)."""
    row = np.zeros(ROW_SIZE)
    row[0], row[1], row[2], row[3] = kind, MODES[cutoff_mode], cutoff, r_on
    row[4 : 4 + len(params)] = params
    row[8] = _phi(row, cutoff) if cutoff_mode == "shift" else 0.0
    return row


@dataclasses.dataclass(frozen=True)
class KernelTable:
    """The potentials of a model in the form the compiled loop reads.

    Attributes:
        rows: (T, 9) float64, one row per potential (:func:`kernel_row`).
        species_of: (119,) int64, the species index of each atomic number (0 for all when the
            model does not tell species apart).
        row_of: (S, S) int64, the row of each species pair.
    """

    rows: np.ndarray
    species_of: np.ndarray
    row_of: np.ndarray

    @classmethod
    def single(cls, row: np.ndarray) -> KernelTable:
        """One potential for every pair."""
        return cls(row[None, :], np.zeros(119, dtype=np.int64), np.zeros((1, 1), dtype=np.int64))


@numba.njit(cache=True, inline="always")
def _phi_dphi(kind: int, r: float, p0: float, p1: float, p2: float, p3: float):
    """φ(r) (eV) and φ'(r) (eV/Å) of a potential of ``kind`` with parameters p0..p3 (see
    :func:`kernel_row`), without the cutoff treatment."""
    if kind == KIND_LENNARD_JONES:  # C ε, σ, n, m
        xn = (p1 / r) ** p2
        xm = (p1 / r) ** p3
        return p0 * (xn - xm), p0 * (p3 * xm - p2 * xn) / r
    if kind == KIND_MORSE:  # ε, ρ0, r0
        e = math.exp(p1 * (1.0 - r / p2))
        return p0 * e * (e - 2.0), (-2.0 * p0 * p1 / p2) * e * (e - 1.0)
    if kind == KIND_YUKAWA:  # A, κ
        e = p0 * math.exp(-p1 * r)
        return e / r, -e * (p1 * r + 1.0) / (r * r)
    x = p0 * (p1 / r) ** p2  # soft sphere: ε, σ, n
    return x, -p2 * x / r


@numba.njit(cache=True)
def _phi(row: np.ndarray, r: float) -> float:
    return _phi_dphi(int(row[0]), r, row[4], row[5], row[6], row[7])[0]


@numba.njit(cache=True, inline="always")
def _terms(kind, mode, cutoff, r_on, p0, p1, p2, p3, phi_cut, r2):  # fmt: skip
    """Cut φ (eV) and −φ'(r)/r (eV/Å²) at squared distance r2 (Å²); zero beyond r_c."""
    if r2 >= cutoff * cutoff:
        return 0.0, 0.0
    if kind == KIND_LENNARD_JONES and mode != MODE_SMOOTH:
        x2 = p1 * p1 / r2
        if p2 == 12.0 and p3 == 6.0:
            xm = x2 * x2 * x2
            xn = xm * xm
        else:
            xm = x2 ** (0.5 * p3)
            xn = x2 ** (0.5 * p2)
        phi = p0 * (xn - xm)
        if mode == MODE_SHIFT:
            phi -= phi_cut
        return phi, p0 / r2 * (p2 * xn - p3 * xm)
    r = math.sqrt(r2)
    phi, dphi = _phi_dphi(kind, r, p0, p1, p2, p3)
    if mode == MODE_SHIFT:
        phi -= phi_cut
    elif mode == MODE_SMOOTH:
        width = cutoff - r_on
        s = min(max((cutoff - r) / width, 0.0), 1.0)
        switch = s * s * s * (10.0 - 15.0 * s + 6.0 * s * s)
        dswitch = (-30.0 / width) * (s * (1.0 - s)) ** 2
        dphi = dphi * switch + phi * dswitch
        phi = phi * switch
    return phi, -dphi / r


@numba.njit(cache=True, fastmath={"contract"})
def _pair_loop(
    positions, numbers, centres, neighbors, shifts, cell, system,
    rows, species_of, row_of, half, want_virial, forces, energies, virial,
):  # fmt: skip
    """Accumulate forces (N, 3), per-atom energies (N,) and virials (B, 3, 3) over the pairs.

    With one potential its parameters live in registers for the whole loop (loads from
    ``rows`` could not be hoisted past the stores into ``forces``); with several, each pair
    reads its species pair's row.
    """
    single = rows.shape[0] == 1
    k = 0
    kind, mode = int(rows[0, 0]), int(rows[0, 1])
    cutoff, r_on, phi_cut = rows[0, 2], rows[0, 3], rows[0, 8]
    p0, p1, p2, p3 = rows[0, 4], rows[0, 5], rows[0, 6], rows[0, 7]
    for e in range(centres.shape[0]):
        i = centres[e]
        j = neighbors[e]
        dx = positions[j, 0] - positions[i, 0]
        dy = positions[j, 1] - positions[i, 1]
        dz = positions[j, 2] - positions[i, 2]
        s0, s1, s2 = shifts[e, 0], shifts[e, 1], shifts[e, 2]
        if s0 != 0 or s1 != 0 or s2 != 0:
            b = system[i]
            dx += s0 * cell[b, 0, 0] + s1 * cell[b, 1, 0] + s2 * cell[b, 2, 0]
            dy += s0 * cell[b, 0, 1] + s1 * cell[b, 1, 1] + s2 * cell[b, 2, 1]
            dz += s0 * cell[b, 0, 2] + s1 * cell[b, 1, 2] + s2 * cell[b, 2, 2]
        if not single:
            k = row_of[species_of[numbers[i]], species_of[numbers[j]]]
            kind, mode = int(rows[k, 0]), int(rows[k, 1])
            cutoff, r_on, phi_cut = rows[k, 2], rows[k, 3], rows[k, 8]
            p0, p1, p2, p3 = rows[k, 4], rows[k, 5], rows[k, 6], rows[k, 7]
        r2 = dx * dx + dy * dy + dz * dz
        phi, scaled = _terms(kind, mode, cutoff, r_on, p0, p1, p2, p3, phi_cut, r2)
        if phi == 0.0 and scaled == 0.0:
            continue
        fx, fy, fz = dx * scaled, dy * scaled, dz * scaled  # force on j
        forces[i, 0] -= fx
        forces[i, 1] -= fy
        forces[i, 2] -= fz
        energies[i] += 0.5 * phi
        if half:
            forces[j, 0] += fx
            forces[j, 1] += fy
            forces[j, 2] += fz
            energies[j] += 0.5 * phi
        if want_virial:
            b = system[i]
            virial[b, 0, 0] += fx * dx
            virial[b, 0, 1] += fx * dy
            virial[b, 0, 2] += fx * dz
            virial[b, 1, 0] += fy * dx
            virial[b, 1, 1] += fy * dy
            virial[b, 1, 2] += fy * dz
            virial[b, 2, 0] += fz * dx
            virial[b, 2, 1] += fz * dy
            virial[b, 2, 2] += fz * dz


@dataclasses.dataclass(frozen=True)
class PairList:
    """Pairs in the compact form the loop streams: int32 atoms, int8 image shifts when they fit.

    Attributes:
        centres, neighbors: (E,) int32 atom indices i and j.
        shifts: (E, 3) integer image shifts (int8, or int32 beyond ±127).
    """

    centres: np.ndarray
    neighbors: np.ndarray
    shifts: np.ndarray

    @classmethod
    def from_tensors(cls, edge_index: torch.Tensor, shifts: torch.Tensor) -> PairList:
        """From (2, E) atom indices and (E, 3) integer shifts (CPU tensors)."""
        edges = edge_index.numpy().astype(np.int32)
        image = shifts.numpy()
        small = image.size == 0 or int(np.abs(image).max()) <= np.iinfo(np.int8).max
        return cls(edges[0], edges[1], image.astype(np.int8 if small else np.int32))


def kernel_applies(batch: AtomsBatch) -> bool:
    """True when the compiled loop can evaluate ``batch``: CPU tensors in float32/float64."""
    positions = batch.positions
    return positions.device.type == "cpu" and positions.dtype in (torch.float32, torch.float64)


def kernel_evaluate(
    table: KernelTable,
    positions: torch.Tensor,
    numbers: torch.Tensor,
    cell: torch.Tensor,
    system_idx: torch.Tensor,
    n_systems: int,
    pairs: PairList,
    stress: bool = False,
    half_list: bool = False,
) -> dict[str, torch.Tensor]:
    """The compiled loop on raw arrays: positions (N, 3) Å, numbers (N,), cell (B, 3, 3) Å,
    system_idx (N,), the ``pairs``; see :func:`kernel_forces_and_stress` for the results."""
    with torch.no_grad():
        positions = positions.detach().contiguous()
        dtype = positions.dtype
        n_atoms = positions.shape[0]
        cell = cell.detach().to(dtype).contiguous()
        forces = torch.zeros((n_atoms, 3), dtype=dtype)
        energies = torch.zeros(n_atoms, dtype=dtype)
        virial = torch.zeros((n_systems, 3, 3), dtype=dtype)
        _pair_loop(
            positions.numpy(),
            numbers.contiguous().numpy(),
            pairs.centres,
            pairs.neighbors,
            pairs.shifts,
            cell.numpy(),
            system_idx.contiguous().numpy(),
            table.rows,
            table.species_of,
            table.row_of,
            half_list,
            stress,
            forces.numpy(),
            energies.numpy(),
            virial.numpy(),
        )
        energy = torch.zeros(n_systems, dtype=dtype).index_add_(0, system_idx, energies)
        out = {"energy": energy, "energies": energies, "forces": forces}
        if stress:
            weight = -1.0 if half_list else -0.5  # each pair once, or twice
            volumes = torch.linalg.det(cell).abs()
            out["stress"] = virial * weight / volumes[:, None, None]
    return out


def kernel_forces_and_stress(
    table: KernelTable, batch: AtomsBatch, stress: bool = False, half_list: bool = False
) -> dict[str, torch.Tensor]:
    """Evaluate the potentials of ``table`` on ``batch`` in one compiled pass.

    Same contract as :func:`~ase_mlmd.models.pair_direct.pair_forces_and_stress`: the pairs of
    ``batch.edge_index`` (a skin list is fine: pairs beyond r_c give nothing), each once
    (``half_list``) or both ways; accumulation in the positions' dtype.

    Returns:
        dict with energy (B,), energies (N,), forces (N, 3) and, if asked, stress (B, 3, 3),
        in eV, eV/Å and eV/Å^3 (stress of fully periodic systems only).
    """
    pairs = PairList.from_tensors(batch.edge_index, batch.cell_shifts)
    return kernel_evaluate(
        table,
        batch.positions,
        batch.numbers,
        batch.cell,
        batch.system_idx,
        batch.n_systems,
        pairs,
        stress,
        half_list,
    )
