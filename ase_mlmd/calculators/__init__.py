"""ASE calculators over energy models, model cards and the name registry."""
