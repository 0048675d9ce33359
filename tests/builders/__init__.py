"""ONNX models built in code for the tests, in one place (no binary blobs, no downloads).

* :mod:`tests.builders.cnn` -- small CNNs, a MatMul model, two inputs, the demo digits;
* :mod:`tests.builders.tasks` -- a detector-like head whose class scores INT8 wrecks;
* :mod:`tests.builders.qdq` -- explicitly quantized / FP16 / mixed models for backend tests;
* :mod:`tests.builders.fp8` -- FP8 (E4M3) Q/DQ models, good and bad;
* :mod:`tests.builders.subgraphs` -- If / Loop bodies reading outer tensors;
* :mod:`tests.builders.robust` -- one minimal graph per class of model that used to crash;
* :mod:`tests.builders.latency` -- models for the latency estimator.

The most used builders are re-exported here. The old module names (``_models``,
``_task_models``, ``qdq_models``, ``fp8_models``, ``subgraph_models``, ``robust_models``,
``latency_models``) remain as re-exporting shims for now.
"""

from tests.builders.cnn import demo_digits, matmul_model, small_cnn, two_input_model

__all__ = ["demo_digits", "matmul_model", "small_cnn", "two_input_model"]
