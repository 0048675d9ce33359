"""Small, documented edits of shipped ONNX files that make them scoreable or buildable.

* :func:`rename_dims`: PP-OCR's direction classifier names both its height and width ``?``;
  TensorRT takes dimensions of one name as one size, so a 48 x 192 profile contradicts the
  model (quantkit's build error says so). The copy names them ``height`` and ``width``.
* :func:`append_yolox_decode`: ddddocr's YOLOX detector ships with its raw head (grid offsets
  and log sizes); its Python package decodes boxes in numpy. The same decode (YOLOX's
  ``decode_in_inference``) is appended to the graph, so the model outputs boxes in pixels, as
  a YOLOX export with decoding on does, and the ``detection`` metric can match them by IoU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def yolox_grids(size: int = 416, strides: tuple[int, ...] = (8, 16, 32)) -> tuple[np.ndarray,
                                                                                   np.ndarray]:
    """``(grid [1, A, 2], stride [1, A, 1])`` of YOLOX's anchor points, row-major per level."""
    grids, expanded = [], []
    for stride in strides:
        n = size // stride
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack((xv, yv), 2).reshape(1, -1, 2))
        expanded.append(np.full((1, n * n, 1), stride))
    return (np.concatenate(grids, 1).astype(np.float32),
            np.concatenate(expanded, 1).astype(np.float32))


def rename_dims(source: str | os.PathLike[str], target: str | os.PathLike[str],
                names: dict[str, list[str]]) -> Path:
    """Write ``source`` with the dims of each input in ``names`` renamed (atomically).

    ``names[input]`` gives one name per axis; an empty string keeps that axis as it is.
    """
    import onnx

    model = onnx.load(os.fspath(source))
    for vi in model.graph.input:
        for dim, name in zip(vi.type.tensor_type.shape.dim, names.get(vi.name, []),
                             strict=False):
            if name:
                dim.dim_param = name
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    onnx.save(model, os.fspath(tmp))
    os.replace(tmp, out)
    return out


def append_yolox_decode(source: str | os.PathLike[str], target: str | os.PathLike[str],
                        size: int = 416) -> Path:
    """Write ``source`` with ``xy = (xy + grid) * stride``, ``wh = exp(wh) * stride`` appended.

    The output keeps its name and shape ``[N, A, 4 + 1 + classes]`` (box centre and size in
    input pixels, objectness, class scores). Written atomically.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(os.fspath(source))
    graph = model.graph
    raw = graph.output[0].name
    tail = "zoo_decode"
    for node in graph.node:  # rename the head's output; the decoded tensor takes its name
        node.output[:] = [f"{raw}_raw" if o == raw else o for o in node.output]
    grid, stride = yolox_grids(size)
    consts = {"grid": grid, "stride": stride, "s0": np.array([0], np.int64),
              "s2": np.array([2], np.int64), "s4": np.array([4], np.int64),
              "s_end": np.array([2 ** 31 - 1], np.int64), "axis2": np.array([2], np.int64)}
    graph.initializer.extend(numpy_helper.from_array(v, f"{tail}/{k}") for k, v in consts.items())

    def c(k: str) -> str:
        return f"{tail}/{k}"

    graph.node.extend([
        helper.make_node("Slice", [f"{raw}_raw", c("s0"), c("s2"), c("axis2")], [f"{tail}/xy"],
                         name=f"{tail}/SliceXY"),
        helper.make_node("Slice", [f"{raw}_raw", c("s2"), c("s4"), c("axis2")], [f"{tail}/wh"],
                         name=f"{tail}/SliceWH"),
        helper.make_node("Slice", [f"{raw}_raw", c("s4"), c("s_end"), c("axis2")],
                         [f"{tail}/scores"], name=f"{tail}/SliceScores"),
        helper.make_node("Add", [f"{tail}/xy", c("grid")], [f"{tail}/xy_grid"],
                         name=f"{tail}/AddGrid"),
        helper.make_node("Mul", [f"{tail}/xy_grid", c("stride")], [f"{tail}/xy_px"],
                         name=f"{tail}/MulXY"),
        helper.make_node("Exp", [f"{tail}/wh"], [f"{tail}/wh_exp"], name=f"{tail}/Exp"),
        helper.make_node("Mul", [f"{tail}/wh_exp", c("stride")], [f"{tail}/wh_px"],
                         name=f"{tail}/MulWH"),
        helper.make_node("Concat", [f"{tail}/xy_px", f"{tail}/wh_px", f"{tail}/scores"], [raw],
                         axis=2, name=f"{tail}/Concat"),
    ])
    onnx.checker.check_model(model)
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    onnx.save(model, os.fspath(tmp))
    os.replace(tmp, out)
    return out


__all__ = ["append_yolox_decode", "rename_dims", "yolox_grids"]
