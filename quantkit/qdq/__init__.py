"""Precision plans and explicitly quantized (Q/DQ) ONNX models for TensorRT.

* :mod:`.plan` -- precision plans (YAML) and the per-node plan int8 / fp8 / fp16 / fp32 (the
  file's ``rescue:`` key is read above, by :mod:`quantkit.transforms.precision_file`);
* :mod:`.rules` -- which ops TensorRT quantizes and how (docs/tensorrt_rules.md#qdq-placement);
* :mod:`.writer` -- inserts QuantizeLinear/DequantizeLinear following those rules;
* :mod:`.fp8` -- what FP8 (E4M3) Q/DQ differs in, and the check of FP8 build targets;
* :mod:`.fp16` -- makes the non-INT8 part FP16 with Cast nodes for strongly typed builders;
* :mod:`.view` -- the Q/DQ nodes of a graph on top of :class:`quantkit.graph.GraphIndex`;
* :mod:`.lint` -- checks any Q/DQ model against TensorRT's rules (:mod:`.findings`: what it
  reports).

Graph indexing and editing is :mod:`quantkit.graph`'s, one layer below.
"""
