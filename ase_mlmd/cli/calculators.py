"""List the model cards ase-mlmd knows: species, cutoff, backend, provenance."""

from __future__ import annotations


class CLICommand:
    """List the calculators (model cards) and backends ase-mlmd knows.

    Cards are read from the directories in ASE_MLMD_CARD_PATH and from the project's
    calculators/ folder. Any card works with `ase-mlmd run NAME ...` and `ase-mlmd md --calc NAME`.
    """

    @staticmethod
    def add_arguments(parser) -> None:
        parser.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            help="also print provenance, citation and file paths",
        )

    @staticmethod
    def run(args) -> None:
        from ase_mlmd.calculators.cards import read_card
        from ase_mlmd.calculators.registry import ML_BACKENDS, available_cards

        cards = available_cards()
        rows = []
        for name, path in cards.items():
            card = read_card(path)
            species = "any" if card.species is None else " ".join(card.species_symbols)
            rows.append(
                (name, card.backend, species, f"{card.cutoff:g}", str(card.dtype)[6:], card)
            )
        header = ("name", "backend", "species", "cutoff/Å", "dtype")
        widths = [
            max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
            for i in range(5)
        ]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        for row in rows:
            print("  ".join(v.ljust(w) for v, w in zip(row[:5], widths, strict=True)))
            card = row[5]
            source = card.provenance.get("source") or card.description
            print(f"    provenance: {source}")
            if args.verbose:
                print(f"    card: {card.path}")
                if card.citation:
                    print(f"    cite: {card.citation}")
                for key, value in card.provenance.items():
                    if key != "source":
                        print(f"    {key}: {value}")
        print(f"\nbackends (give a model file or card with -p model=...): {', '.join(ML_BACKENDS)}")
