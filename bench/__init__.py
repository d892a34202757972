"""Benchmarks: scripts that print a table, run from the repository root as
``python -m bench.<name>`` (see docs/performance.md for the recorded numbers)."""
