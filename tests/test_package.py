"""Package-level promises: a light `import quantkit`, a curated public API, the CLI entry."""

from __future__ import annotations

import json
import subprocess
import sys

import quantkit

HEAVY = ["onnxruntime", "tensorrt", "tensorrt_rtx_bindings", "torch", "datasets", "pycuda",
         "cuda", "onnx", "PIL", "matplotlib", "pandas", "scipy", "numba", "llvmlite"]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


def test_import_quantkit_is_light() -> None:
    loaded = _modules_after("import quantkit")
    assert not [m for m in HEAVY if m in loaded]


def test_import_calibrators_and_data_stay_free_of_gpu_and_ml_frameworks() -> None:
    loaded = _modules_after("import quantkit.calibrators, quantkit.data, "
                            "quantkit.calibrators.tensorrt")
    assert not [m for m in ("onnxruntime", "tensorrt", "torch", "datasets", "pycuda", "cuda")
                if m in loaded]


def test_public_api() -> None:
    assert sorted(quantkit.__all__) == sorted(set(quantkit.__all__))
    for name in quantkit.__all__:
        assert getattr(quantkit, name) is not None, name
    assert callable(quantkit.calibrate)


def test_version_flag() -> None:
    out = subprocess.run([sys.executable, "-m", "quantkit.cli.main", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert quantkit.__version__ in out


def test_outputs_get_normal_permissions(tmp_path: object) -> None:
    import os
    from pathlib import Path

    from quantkit._io import write_text_atomic

    out = Path(str(tmp_path)) / "f.txt"
    write_text_atomic(out, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
