"""Molecular dynamics: ASE-driven runs (and, later, the batched torch engine)."""
