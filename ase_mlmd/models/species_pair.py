"""Pair potentials resolved by species pair: one φ_ab(r) for each unordered pair of elements.

``E = 1/2 Σ_i Σ_{j≠i} φ_{Z_i Z_j}(r_ij)``. Each φ_ab is any :class:`~ase_mlmd.models.pair.
PairPotential` (analytic, neural, spline table) with its own cutoff treatment; the neighbor list
is built at the largest of their cutoffs and each pair is evaluated by the potential of its
species pair only. This is the model of a binary (or multi-component) Lennard-Jones mixture
(σ₁₁, σ₂₂, σ₁₂ differ) and of DiffSim fits over compositions (METRICS.md §2), where one φ per
pair type is learned from the partial RDFs g_ab(r).

Every unordered pair of the listed species must have a potential (a missing cross term would
silently mean "no interaction"); structures with other elements raise
:class:`~ase_mlmd.errors.UnsupportedSpeciesError`.

When every φ_ab has an analytic derivative (``direct_forces``), forces come without autograd
(:meth:`SpeciesPairPotential.direct_evaluate`): every φ_ab is evaluated on every pair and each
pair takes the value of its own species pair (``torch.where``), so no index set depends on the
data and nothing synchronises with the host. The autograd path (:meth:`forward`, used for
gradients) evaluates each φ_ab on its own pairs only, so that no φ_ab is ever evaluated where
it could overflow and poison a gradient.

>>> from ase_mlmd.models.pair import LennardJones
>>> mix = SpeciesPairPotential({
...     "Ar-Ar": LennardJones(sigma=0.9, cutoff=2.5),
...     "Ar-Kr": LennardJones(sigma=1.0, cutoff=2.5),
...     "Kr-Kr": LennardJones(sigma=1.1, cutoff=2.5),
... })
>>> mix.pair_labels
['Ar-Ar', 'Ar-Kr', 'Kr-Kr']
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from ase_mlmd.batch import AtomsBatch
from ase_mlmd.models.interface import EnergyModel, scatter_sum, system_energy
from ase_mlmd.models.pair import PairPotential
from ase_mlmd.models.pair_direct import pair_forces_and_stress
from ase_mlmd.models.pair_kernel import KernelTable, kernel_applies, kernel_forces_and_stress

PairKey = tuple[int, int]


def parse_species(name: str | int) -> int:
    """An element symbol ("Ar") or atomic number as an atomic number."""
    if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit()):
        z = int(name)
        if not 0 < z < len(chemical_symbols):
            raise ValueError(f"{name!r} is not an atomic number")
        return z
    symbol = str(name).strip()
    if symbol not in atomic_numbers:
        raise ValueError(f"{name!r} is not an element symbol (e.g. 'Ar', 'Kr')")
    return atomic_numbers[symbol]


def parse_pair(key: str | tuple[str | int, str | int]) -> PairKey:
    """``"Ar-Kr"``, ``("Ar", "Kr")`` or ``(18, 36)`` as a sorted pair of atomic numbers."""
    if isinstance(key, str):
        parts = key.split("-")
        if len(parts) != 2:
            raise ValueError(f"a species pair is written 'A-B' (e.g. 'Ar-Kr'), got {key!r}")
    else:
        parts = list(key)
        if len(parts) != 2:
            raise ValueError(f"a species pair has two elements, got {key!r}")
    a, b = sorted(parse_species(p) for p in parts)
    return a, b


def pair_label(pair: PairKey) -> str:
    """``(18, 36)`` → ``"Ar-Kr"``."""
    return f"{chemical_symbols[pair[0]]}-{chemical_symbols[pair[1]]}"


class SpeciesPairPotential(EnergyModel):
    """One pair potential per unordered species pair.

    Args:
        potentials: ``{"A-B": φ_AB, ...}`` (keys as :func:`parse_pair` reads them); every pair
            of the species that appear must be present.

    Attributes:
        pairs: the sorted (Z_a, Z_b) keys, in the order of ``potentials`` (a ``ModuleList``).
        pair_labels: the same as "A-B" strings.
    """

    def __init__(self, potentials: Mapping[str | tuple, PairPotential]) -> None:
        if not potentials:
            raise ValueError("a species-pair potential needs at least one pair potential")
        by_pair: dict[PairKey, PairPotential] = {}
        for key, potential in potentials.items():
            pair = parse_pair(key)
            if pair in by_pair:
                raise ValueError(f"species pair {pair_label(pair)} is given twice")
            if not isinstance(potential, PairPotential):
                raise TypeError(
                    f"{pair_label(pair)}: expected a PairPotential, got {type(potential).__name__}"
                )
            by_pair[pair] = potential
        species = sorted({z for pair in by_pair for z in pair})
        missing = [
            pair_label(p)
            for p in itertools.combinations_with_replacement(species, 2)
            if p not in by_pair
        ]
        if missing:
            raise ValueError(
                f"no potential for the species pairs {missing}: every pair of "
                f"{[chemical_symbols[z] for z in species]} needs one (use a zero-strength "
                "potential to switch a pair off explicitly)"
            )
        cutoff = max(p.cutoff for p in by_pair.values())
        super().__init__(cutoff=cutoff, species=species)
        self.pairs = sorted(by_pair)
        self.potentials = torch.nn.ModuleList([by_pair[p] for p in self.pairs])
        size = max(species) + 1
        lookup = torch.full((size, size), -1, dtype=torch.long)
        for k, (a, b) in enumerate(self.pairs):
            lookup[a, b] = lookup[b, a] = k
        self.register_buffer("pair_lookup", lookup, persistent=False)
        self._dtype = self.potentials[0]._dtype
        self._kernel_layout: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def pair_labels(self) -> list[str]:
        return [pair_label(p) for p in self.pairs]

    def __getitem__(self, key: str | tuple) -> PairPotential:
        """The potential of one species pair (``mix["Ar-Kr"]``)."""
        pair = parse_pair(key)
        if pair not in self.pairs:
            raise KeyError(f"no potential for {pair_label(pair)}; pairs: {self.pair_labels}")
        return self.potentials[self.pairs.index(pair)]

    def items(self) -> list[tuple[str, PairPotential]]:
        """(label, potential) per species pair."""
        return list(zip(self.pair_labels, self.potentials, strict=True))

    def pair_kind(self, numbers: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """(M,) index into :attr:`pairs` of the pairs (i, j) of atoms with ``numbers``."""
        return self.pair_lookup[numbers[i], numbers[j]]

    def forward(self, batch: AtomsBatch) -> dict[str, torch.Tensor]:
        i, j = batch.edge_index
        r = torch.linalg.norm(batch.edge_vectors(), dim=1)
        kind = self.pair_kind(batch.numbers, i, j)
        phi = torch.zeros_like(r)
        for k, potential in enumerate(self.potentials):
            index = torch.nonzero(kind == k).reshape(-1)
            phi = phi.index_put((index,), potential.cut_pair_energy(r[index]))
        energies = scatter_sum(0.5 * phi, i, batch.positions.shape[0])
        return {"energy": system_energy(batch, energies), "energies": energies}

    @property
    def direct_forces(self) -> bool:
        """True when every species pair's potential has an analytic derivative."""
        return type(self).forward is SpeciesPairPotential.forward and all(
            p.direct_forces for p in self.potentials
        )

    def direct_evaluate(
        self,
        batch: AtomsBatch,
        properties: Iterable[str] = ("energy", "forces"),
        half_list: bool = False,
        shift_vectors: torch.Tensor | None = None,
        flat_index: tuple[torch.Tensor, torch.Tensor] | None = None,
        centre_counts: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """As :meth:`~ase_mlmd.models.pair.PairPotential.direct_evaluate`, per species pair."""
        if not self.direct_forces:
            raise NotImplementedError(
                "a species pair has no analytic derivative; use "
                "ase_mlmd.models.interface.evaluate (autograd) instead"
            )
        table = self.kernel_table() if kernel_applies(batch) else None
        if table is not None:
            return kernel_forces_and_stress(table, batch, "stress" in set(properties), half_list)
        i, j = batch.edge_index
        kind = self.pair_kind(batch.numbers, i, j)

        def pair_terms(r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            phi, scaled = self.potentials[0].pair_terms(r2)
            for k in range(1, len(self.potentials)):
                phi_k, scaled_k = self.potentials[k].pair_terms(r2)
                mine = kind == k
                phi = torch.where(mine, phi_k, phi)
                scaled = torch.where(mine, scaled_k, scaled)
            return phi, scaled

        return pair_forces_and_stress(
            pair_terms,
            batch,
            "stress" in set(properties),
            half_list,
            shift_vectors,
            flat_index,
            centre_counts,
        )

    def kernel_table(self) -> KernelTable | None:
        """The species pairs as rows of the compiled pair loop, or None when one of them has
        no row (:meth:`~ase_mlmd.models.pair.PairPotential.kernel_row`)."""
        rows = [p.kernel_row() for p in self.potentials]
        if any(row is None for row in rows):
            return None
        if self._kernel_layout is None:  # the pairs are fixed: element -> species -> row once
            species = sorted({z for pair in self.pairs for z in pair})
            species_of = np.zeros(119, dtype=np.int64)
            species_of[species] = np.arange(len(species))
            row_of = np.zeros((len(species), len(species)), dtype=np.int64)
            for k, (a, b) in enumerate(self.pairs):
                row_of[species_of[a], species_of[b]] = row_of[species_of[b], species_of[a]] = k
            self._kernel_layout = (species_of, row_of)
        return KernelTable(np.stack(rows), *self._kernel_layout)

    def extra_repr(self) -> str:
        return f"pairs={self.pair_labels}, cutoff={self.cutoff}"
