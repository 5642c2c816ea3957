"""Datasets: readers of labelled frames (eV, Å), train/val/test splits, dataset statistics, and
reference labelling (MD with GFN2-xTB, EMT, LJ, OpenMM/AMBER or any card; relabelling frames).

Every reader returns ASE ``Atoms`` whose labels sit in a ``SinglePointCalculator`` (energy in
eV, forces in eV/Å) and whose ``info["source"]`` names the file and frame.
"""

from ase_mlmd.data.openmm_reference import (
    OpenMMCalculator,
    ala2_reference_trajectory,
    topology_atoms,
)
from ase_mlmd.data.plumed import read_plumed_fes
from ase_mlmd.data.readers import (
    ENERGY_UNITS,
    FORMATS,
    LENGTH_UNITS,
    infer_format,
    read_datasets,
    read_frames,
)
from ase_mlmd.data.reference import REFERENCES, check_species, reference_calculator
from ase_mlmd.data.sampling import SamplingConfig, label_frames, sample_reference
from ase_mlmd.data.splits import DatasetSplit, check_species_coverage, parse_split, split_indices
from ase_mlmd.data.statistics import DatasetStatistics, dataset_statistics

__all__ = [
    "REFERENCES",
    "OpenMMCalculator",
    "SamplingConfig",
    "ala2_reference_trajectory",
    "check_species",
    "label_frames",
    "read_plumed_fes",
    "reference_calculator",
    "sample_reference",
    "topology_atoms",
    "ENERGY_UNITS",
    "FORMATS",
    "LENGTH_UNITS",
    "DatasetSplit",
    "DatasetStatistics",
    "check_species_coverage",
    "dataset_statistics",
    "infer_format",
    "parse_split",
    "read_datasets",
    "read_frames",
    "split_indices",
]
