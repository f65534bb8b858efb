"""Benchmarks: `python -m benchmarks [name ...] [--quick]` (see benchmarks/README.md).

Not tests: they print a table, and each compares its figures side by side in one run,
since absolute times on a shared 2-core machine drift from run to run.
"""
