"""The ase-mlmd command line."""
