"""``ase-mlmd md --help``: every example runs a shipped card on the kind of structure it was
made for (the help once ran the argon Lennard-Jones card on ethanol, which that card - species
"*" - accepts without complaint and simulates as nonsense)."""

from __future__ import annotations

import re

from ase_mlmd.calculators.registry import available_cards
from ase_mlmd.cli.md import CLICommand


def test_every_help_example_pairs_a_card_with_its_own_kind_of_structure():
    examples = re.findall(r"ase-mlmd md (\S+)\.\w+ --calc (\S+)", CLICommand.__doc__)
    shipped = [(stem, calc) for stem, calc in examples if calc in available_cards()]
    assert len(shipped) >= 2  # start.xyz / NAME are placeholders
    for stem, calc in shipped:  # cards are named for their system: lj-argon, ethanol-nequip
        assert stem in calc, f"the example runs the {calc} card on {stem}"
