"""Benchmark study: FP8 vs INT8 and ModelOpt's FP8."""
