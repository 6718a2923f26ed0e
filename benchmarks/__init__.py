"""Benchmarks of a nestspk source checkout (not installed with the package): ``python -m benchmarks.bench``."""
