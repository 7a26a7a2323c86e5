"""Benchmarks: `python bench/run_benchmark.py` (speed and memory against transformers), and their parts."""
