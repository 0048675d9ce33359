"""Benchmark study: the default calibration method against every other one."""
