"""Datasets: readers of labelled frames (eV, Å), train/val/test splits, dataset statistics.

Every reader returns ASE ``Atoms`` whose labels sit in a ``SinglePointCalculator`` (energy in
eV, forces in eV/Å) and whose ``info["source"]`` names the file and frame.
"""

from ase_mlmd.data.readers import (
    ENERGY_UNITS,
    FORMATS,
    LENGTH_UNITS,
    infer_format,
    read_datasets,
    read_frames,
)
from ase_mlmd.data.splits import DatasetSplit, check_species_coverage, parse_split, split_indices
from ase_mlmd.data.statistics import DatasetStatistics, dataset_statistics

__all__ = [
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
