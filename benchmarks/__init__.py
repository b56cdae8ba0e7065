"""Speed and memory benchmarks of msd-dagster (not part of the test suite).

Run ``python -m benchmarks.run --help`` from the repository root; see docs/benchmarks.md.
"""
