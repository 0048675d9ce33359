"""Benchmark study: full sweeps of the recipes, autotune vs a naive rule, sensitivity time."""
