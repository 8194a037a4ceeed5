"""Benchmarks of dsl: ``python -m benchmarks`` (see :mod:`benchmarks.harness`).

Not installed with the project; run from the repository root.
"""
