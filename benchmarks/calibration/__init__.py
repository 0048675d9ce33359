"""Benchmark study: calibration vs ONNX Runtime and ModelOpt (speed, memory, KL search)."""
