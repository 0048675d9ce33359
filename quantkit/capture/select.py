"""Which activations calibration needs: those a Q/DQ model can quantize.

Only the activation inputs of the ops TensorRT runs in INT8 or FP8 ever use a scale
(``docs/tensorrt_rules.md#qdq-placement``): the inputs of Conv, ConvTranspose, Gemm and MatMul
that are not constants, and both inputs of a residual Add (an Add of two activations, one of
them produced by a Conv or ConvTranspose; the writer quantizes the branch TensorRT does not
fuse). Every other activation -- a Conv output read only by its ReLU, a Softmax output read by
a Reshape -- gets a scale that no plan uses, so ``quantkit calibrate`` skips it
(:func:`quantkit.capture.calibrate` with ``quantized_only=True``) and histograms a third to a
half of the values. ``--all-tensors`` calibrates every activation, for a TensorRT cache that
covers every tensor (implicit quantization).

The op lists mirror ``quantkit.qdq.rules`` (a layer above this one);
``tests/capture/test_select.py`` checks that they agree and that every tensor the writer
quantizes on real models is selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quantkit.model import ActivationInfo

#: ops whose activation inputs are quantized (``quantkit.qdq.rules.QUANTIZABLE_OPS``)
QUANTIZED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: producers into which TensorRT fuses a residual Add (``quantkit.qdq.rules.FUSES_RESIDUAL``)
RESIDUAL_PRODUCERS = frozenset({"Conv", "ConvTranspose"})


def quantized_activations(model: Any, activations: Sequence[ActivationInfo]
                          ) -> list[ActivationInfo]:
    """The activations of ``activations`` that a quantized op of ``model``'s main graph reads.

    Args:
        model: the ONNX model (its main graph's nodes are read; bodies of If/Loop/Scan stay
            float when quantized, so their reads do not count).
        activations: the model's activations (:func:`quantkit.model.activation_tensors`).

    Returns:
        The selected activations, in the order given.
    """
    live = {a.name for a in activations}
    producer_op = {out: node.op_type for node in model.graph.node for out in node.output if out}
    wanted: set[str] = set()
    for node in model.graph.node:
        inputs = [name for name in node.input if name in live]
        residual = (node.op_type == "Add" and len(node.input) == 2 and len(inputs) == 2
                    and any(producer_op.get(name) in RESIDUAL_PRODUCERS for name in inputs))
        if node.op_type in QUANTIZED_OPS or residual:
            wanted.update(inputs)
    return [a for a in activations if a.name in wanted]
