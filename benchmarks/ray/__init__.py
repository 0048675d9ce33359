"""Benchmark study: sharded calibration and sweeps on Ray vs local."""
