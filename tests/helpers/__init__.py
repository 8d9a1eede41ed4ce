"""Shared test helpers: oracles (the authors' package), and per-adapter utilities."""
