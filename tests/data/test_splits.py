"""Train/val/test splits: sizes, determinism, disjointness, time order, and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import molecule

from ase_mlmd.data import DatasetSplit, check_species_coverage, parse_split, split_indices
from ase_mlmd.errors import DatasetSplitError


def test_mdsim_water_split_is_numpy_permutation_blocks():
    """MDsim water: 320/40/40 of 400 frames, seed 123, from default_rng(seed).permutation."""
    split = split_indices(400, (320, 40, 40), seed=123)
    perm = np.random.default_rng(123).permutation(400)
    assert split.train == perm[:320].tolist()
    assert split.val == perm[320:360].tolist()
    assert split.test == perm[360:].tolist()
    assert split_indices(400, (0.8, 0.1, 0.1), seed=123) == split  # fractions give the same
    assert split.as_dict() == {
        "train": 320, "val": 40, "test": 40, "seed": 123, "ordered": False, "n_frames": 400
    }  # fmt: skip


@pytest.mark.parametrize("sizes", [(0.7, 0.2, 0.1), (50, 20, 10), (0.5, 0.1, 0.05)])
def test_parts_are_disjoint_and_deterministic(sizes):
    split = split_indices(137, sizes, seed=7)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(map(len, parts)) == len(set().union(*parts))  # disjoint
    assert all(0 <= i < 137 for part in parts for i in part)
    expected = [int(np.floor(s * 137 + 1e-9)) if isinstance(s, float) else s for s in sizes]
    if isinstance(sizes[0], float) and abs(sum(sizes) - 1) < 1e-9:
        expected[0] = 137 - expected[1] - expected[2]  # every frame used
    assert [len(p) for p in parts] == expected
    assert split_indices(137, sizes, seed=7) == split
    assert split_indices(137, sizes, seed=8).train != split.train


def test_fractions_summing_to_one_use_every_frame():
    split = split_indices(11, (0.8, 0.1, 0.1), seed=0)
    assert sorted(split.all_indices()) == list(range(11))
    assert (len(split.val), len(split.test)) == (1, 1)


def test_ordered_split_is_contiguous_in_time():
    split = split_indices(100, (0.6, 0.2, 0.2), ordered=True)
    assert split.train == list(range(60))
    assert split.val == list(range(60, 80))
    assert split.test == list(range(80, 100))
    assert max(split.train) < min(split.val) and max(split.val) < min(split.test)


def test_frames_of_a_part():
    frames = [molecule("H2O") for _ in range(10)]
    for k, atoms in enumerate(frames):
        atoms.info["k"] = k
    split = split_indices(10, (6, 2, 2), seed=1)
    assert [a.info["k"] for a in split.frames(frames, "val")] == split.val
    with pytest.raises(DatasetSplitError, match="made for 10 frames but 9"):
        split.frames(frames[:9], "train")
    with pytest.raises(ValueError, match="unknown split part 'training'"):
        split.frames(frames, "training")


def test_empty_part_is_refused():
    with pytest.raises(DatasetSplitError, match=r"val part .* empty.* 5 frames"):
        split_indices(5, (0.8, 0.1, 0.1))
    with pytest.raises(DatasetSplitError, match=r"test part .* empty"):
        split_indices(400, (320, 80, 0))


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((300, 80, 40), "need 420 frames but the dataset has 400"),
        ((0.8, 0.2, 0.1), "sum to 1.1 > 1"),
        ((320.0, 40.0, 40.0), "must be given as integers"),
        ((0.8, 40, 0.1), "mix fractions and counts"),
        ((0.8, 0.2), "three sizes"),
        ((0.9, -0.1, 0.1), ">= 0"),
    ],
)
def test_malformed_sizes(sizes, message):
    with pytest.raises(DatasetSplitError, match=message):
        split_indices(400, sizes)


def test_parse_split():
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    assert parse_split(" 320, 40 ,40") == (320, 40, 40)
    assert all(isinstance(s, int) for s in parse_split("320,40,40"))
    for bad in ("0.8,0.2", "a,b,c", "1,,2"):
        with pytest.raises(DatasetSplitError, match="split"):
            parse_split(bad)


def test_species_coverage():
    frames = [molecule("H2O") for _ in range(8)] + [molecule("CH3Cl")]
    frames[-1].info["source"] = "chloro.xyz#0"
    split = DatasetSplit(train=list(range(6)), val=[6, 7], test=[8], seed=0, ordered=True)
    with pytest.raises(DatasetSplitError, match=r"test part holds C, Cl \(frame 8 \(chloro"):
        check_species_coverage(frames, split)
    covered = DatasetSplit(train=[8, 0, 1, 2], val=[3, 4], test=[5, 6, 7], seed=0, ordered=False)
    check_species_coverage(frames, covered)  # no error: every element is in training
