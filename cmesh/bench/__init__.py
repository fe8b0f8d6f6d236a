"""Benchmark implementations behind `cmesh bench ...`."""
