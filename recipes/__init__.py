"""Real-model recipes: one folder per model.

Each folder holds its recipe YAML and the code that prepares its model and data and scores it.

* :mod:`recipes.efficientnet_lite0` -- EfficientNet-Lite0 (ImageNet classifier);
* :mod:`recipes.ppocr` -- PP-OCRv4 text detection and recognition (``rec.yaml``);
* :mod:`recipes.minilm` -- all-MiniLM-L6-v2 sentence embeddings;
* shared: :mod:`recipes.runtime` (ONNX Runtime as TensorRT computes, TensorRT-RTX parse and
  build), :mod:`recipes.images` (photo sets), :mod:`recipes.export` (cached ONNX exports),
  :mod:`recipes.files` (atomic writes, manifests), :mod:`recipes.plans` (plans read from YAML),
  :mod:`recipes.prepare` (``python -m recipes prepare``).

``recipes`` is a folder of the repository, importable from its root and, after
``pip install -e .``, from anywhere (the editable install puts the root on ``sys.path``).
"""
