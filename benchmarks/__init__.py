"""Optimizer-step benchmarks for adamp-optimizers (run ``python -m benchmarks --help``)."""
