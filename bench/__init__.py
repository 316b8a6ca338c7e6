"""Benchmarks: `python -m bench` runs the end-to-end scenarios (bench/run.py)."""
