"""Benchmarks, run by hand (`python -m benchmarks.<name>`): figures with the machine they ran on."""
