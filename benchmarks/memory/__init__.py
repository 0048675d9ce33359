"""Benchmark study: peak memory of calibration, one pass vs a memory budget."""
