"""Train / validation / test splits of a dataset's frames.

A split is frame indices into the list a reader returned. The random split is the MDsim one:
``numpy.random.default_rng(seed).permutation(n_frames)`` cut into consecutive blocks of the
requested sizes (train first), so one seed always gives the same split and the first ``k``
training indices are themselves a random subset (for learning curves). The time-ordered split
takes contiguous blocks ``train | val | test`` in frame order, so that validation and test
frames come after every training frame of an MD trajectory (no correlated neighbours leak).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from ase_mlmd.errors import DatasetSplitError

PARTS = ("train", "val", "test")


@dataclass
class DatasetSplit:
    """Frame indices of the three parts of a dataset.

    Attributes:
        train, val, test: indices into the frame list (random order for a random split,
            increasing for an ordered one).
        seed: seed of the permutation (recorded also for ordered splits, where it is unused).
        ordered: True for a time-ordered split.
        n_frames: number of frames the split was made for (None when unknown).
    """

    train: list[int]
    val: list[int]
    test: list[int]
    seed: int
    ordered: bool
    n_frames: int | None = None

    def indices(self, part: str) -> list[int]:
        """Indices of ``part`` (``"train"``, ``"val"`` or ``"test"``)."""
        if part not in PARTS:
            raise ValueError(f"unknown split part {part!r}; choose from {PARTS}")
        return getattr(self, part)

    def frames(self, frames: Sequence[Atoms], part: str) -> list[Atoms]:
        """The frames of ``part``, in the split's order.

        Raises:
            DatasetSplitError: ``frames`` is not the list the split was made for (other length).
        """
        indices = self.indices(part)
        known = self.n_frames is not None and len(frames) != self.n_frames
        if known or (indices and max(indices) >= len(frames)):
            made_for = self.n_frames if self.n_frames is not None else f"> {max(indices)}"
            raise DatasetSplitError(
                f"this split was made for {made_for} frames but {len(frames)} were given; "
                "split the dataset you are using (split_indices(len(frames), ...))"
            )
        return [frames[i] for i in indices]

    def all_indices(self) -> list[int]:
        """Indices of all three parts, train then val then test."""
        return [*self.train, *self.val, *self.test]

    def as_dict(self) -> dict:
        """Sizes, seed, order and frame count: enough to recreate the split (for model cards)."""
        return {
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "seed": self.seed,
            "ordered": self.ordered,
            "n_frames": self.n_frames,
        }


def _counts(n_frames: int, sizes: Sequence[float | int]) -> list[int]:
    """Frames per part from fractions or integer counts."""
    if len(sizes) != 3:
        raise DatasetSplitError(f"give three sizes (train, val, test), got {list(sizes)}")
    if any(isinstance(s, bool) or not isinstance(s, int | float | np.number) for s in sizes):
        raise DatasetSplitError(f"split sizes must be numbers, got {list(sizes)}")
    if any(not math.isfinite(s) or s < 0 for s in sizes):
        raise DatasetSplitError(f"split sizes must be finite and >= 0, got {list(sizes)}")
    integer = [isinstance(s, int | np.integer) for s in sizes]
    if all(integer):
        counts = [int(s) for s in sizes]
        if sum(counts) > n_frames:
            raise DatasetSplitError(
                f"split sizes {counts} need {sum(counts)} frames but the dataset has {n_frames}"
            )
        return counts
    if any(integer) and any(int(s) != 0 for s, i in zip(sizes, integer, strict=True) if i):
        raise DatasetSplitError(
            f"split sizes {list(sizes)} mix fractions and counts; give all as fractions "
            "(0.8, 0.1, 0.1) or all as integer frame counts (320, 40, 40)"
        )
    fractions = [float(s) for s in sizes]
    if sum(fractions) > 1 + 1e-9:
        raise DatasetSplitError(
            f"split fractions {fractions} sum to {sum(fractions):.6g} > 1; integer frame counts "
            "must be given as integers"
        )
    counts = [math.floor(f * n_frames + 1e-9) for f in fractions]
    if abs(sum(fractions) - 1) <= 1e-9:
        counts[0] += n_frames - sum(counts)  # fractions that use every frame: rounding to train
    return counts


def split_indices(
    n_frames: int,
    sizes: Sequence[float | int] = (0.8, 0.1, 0.1),
    seed: int = 123,
    ordered: bool = False,
) -> DatasetSplit:
    """Split ``n_frames`` frames into train, validation and test parts.

    Args:
        n_frames: number of frames in the dataset.
        sizes: (train, val, test) as fractions of ``n_frames`` (summing to at most 1; when
            they sum to 1 the rounding remainder goes to train) or as integer frame counts
            (summing to at most ``n_frames``; MDsim water: ``(320, 40, 40)`` of 400). Frames
            beyond the requested sizes are left out.
        seed: seed of ``numpy.random.default_rng(seed).permutation`` for a random split.
        ordered: time-ordered contiguous blocks train | val | test instead of a random split.

    Raises:
        DatasetSplitError: a part would be empty, or the sizes are malformed or need more
            frames than there are.
    """
    n_frames = int(n_frames)
    counts = _counts(n_frames, sizes)
    for part, count in zip(PARTS, counts, strict=True):
        if count == 0:
            raise DatasetSplitError(
                f"the {part} part of the split would be empty: sizes {list(sizes)} of "
                f"{n_frames} frames give {dict(zip(PARTS, counts, strict=True))}; use more "
                "frames or larger sizes"
            )
    order = np.arange(n_frames) if ordered else np.random.default_rng(seed).permutation(n_frames)
    bounds = np.cumsum([0, *counts])
    train, val, test = (order[bounds[k] : bounds[k + 1]].tolist() for k in range(3))
    return DatasetSplit(train, val, test, seed=int(seed), ordered=bool(ordered), n_frames=n_frames)


def parse_split(text: str) -> tuple[float | int, ...]:
    """Split sizes from a command-line string: ``"0.8,0.1,0.1"`` (fractions) or
    ``"320,40,40"`` (frame counts).

    Raises:
        DatasetSplitError: not three comma-separated numbers.
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3 or not all(parts):
        raise DatasetSplitError(
            f"split {text!r} is not three comma-separated sizes like '0.8,0.1,0.1' or '320,40,40'"
        )
    sizes: list[float | int] = []
    for part in parts:
        try:
            sizes.append(int(part))
        except ValueError:
            try:
                sizes.append(float(part))
            except ValueError as err:
                raise DatasetSplitError(f"split size {part!r} in {text!r} is not a number") from err
    return tuple(sizes)


def check_species_coverage(frames: Sequence[Atoms], split: DatasetSplit) -> None:
    """Refuse a split whose validation or test frames hold elements no training frame has.

    Raises:
        DatasetSplitError: names the element, the part and the first frame holding it (its
            ``info["source"]`` when the frame came from a reader).
    """
    seen: set[str] = set()
    for atoms in split.frames(frames, "train"):
        seen.update(atoms.get_chemical_symbols())
    for part in ("val", "test"):
        for i in split.indices(part):
            unseen = sorted(set(frames[i].get_chemical_symbols()) - seen)
            if unseen:
                source = frames[i].info.get("source", "")
                where = f"frame {i}" + (f" ({source})" if source else "")
                raise DatasetSplitError(
                    f"the {part} part holds {', '.join(unseen)} ({where}) but no training frame "
                    f"does (training species: {', '.join(sorted(seen)) or 'none'}); use another "
                    "seed or split, or add frames with these elements to training"
                )
