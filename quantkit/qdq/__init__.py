"""Precision plans and explicitly quantized (Q/DQ) ONNX models for TensorRT.

* :mod:`.plan` -- precision files (YAML) and the per-node plan int8 / fp16 / fp32;
* :mod:`.rules` -- which ops TensorRT quantizes and how (docs/tensorrt_rules.md#qdq-placement);
* :mod:`.writer` -- inserts QuantizeLinear/DequantizeLinear following those rules;
* :mod:`.fp16` -- makes the non-INT8 part FP16 with Cast nodes for strongly typed builders;
* :mod:`.lint` -- checks any Q/DQ model against TensorRT's rules.
"""
