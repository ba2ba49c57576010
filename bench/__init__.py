"""Benchmarks: each prints figures with the baseline measured in the same run."""
