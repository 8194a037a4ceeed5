"""Reproduce the results table of docs/RESULTS.md: ``python -m results``.

Each row of the table is one spec (``specs/`` or ``specs/baselines/``) run for
several seeds; the package runs every row's command per seed, reads the run's
``metrics.jsonl``, adds the measurements a row needs beyond its metric (expert
usage, training-split accuracy, accuracy before and after the ProtoPNet push),
aggregates mean and spread, and rewrites the generated part of
docs/RESULTS.md. It is a repository tool, not part of the installed package.
"""
