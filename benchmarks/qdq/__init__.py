"""Benchmark study: Q/DQ models of quantkit vs ModelOpt vs ONNX Runtime quantize_static."""
