"""The README's Python snippet runs as printed from the folder that holds a clone named `quantkit`.

A clone's parent folder is where a user who followed the README often starts Python. Python
then sees the clone folder `quantkit/` (no ``__init__.py``) as a namespace package, and an
editable install that resolves `quantkit` through a finder appended to ``sys.meta_path``
loses to it: `import quantkit` gave an empty namespace, and the repository's top-level
`calibrators/` folder passed for `quantkit.calibrators`. The project's editable install puts
the repository root on ``sys.path`` instead (pyproject.toml, `package-dir`), where the regular
package `quantkit/quantkit/` beats the namespace portion. This test does what the user does:
copy the repository, install it editable into a fresh virtual environment, and run the
snippet extracted from README.md with the clone's parent folder as the working directory.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

RECIPE = """
name: readme-snippet
model: model.onnx
metric: top1
data:
  calibration: {source: calib.npz, batch_size: 32}
  evaluation: {source: evaluation.npy, labels: labels.npy, batch_size: 50}
calibration: {method: minmax}
configs:
  - {name: fp32, precision: fp32}
  - {name: int8-minmax, precision: int8}
latency: {iterations: 2, warmup: 1}
"""

PRECISION = """
default: int8
default_float: fp16
overrides:
  - op_type: Softmax
    precision: fp32
"""


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    snippet = next((b for b in blocks if "quantkit.calibrate(" in b), None)
    assert snippet is not None, "README.md lost its ```python snippet calling quantkit.calibrate"
    return snippet


def _copy_checkout(dest: Path) -> None:
    """Copy what a clone holds (tracked files, plus new files git does not ignore)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot list the repository's files to clone")
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: {listed.stderr.strip()}")
    for rel in filter(None, listed.stdout.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _inputs(parent: Path) -> None:
    """The files the snippet names, made from the demo model and digits shipped in quantkit."""
    assets = ROOT / "quantkit" / "assets"
    shutil.copy(assets / "demo_cnn.onnx", parent / "model.onnx")
    data = np.load(assets / "demo_data.npz")
    calib = data["calibration"][:64].astype(np.float32)[:, None] / 255.0
    np.savez(parent / "calib.npz", input=calib)
    np.save(parent / "evaluation.npy", data["evaluation"][:100].astype(np.float32)[:, None] / 255)
    np.save(parent / "labels.npy", data["evaluation_labels"][:100])
    (parent / "precision.yaml").write_text(PRECISION)
    (parent / "recipe.yaml").write_text(RECIPE)


@pytest.mark.slow
def test_readme_snippet_runs_from_the_clones_parent_folder(tmp_path: Path) -> None:
    try:
        import ensurepip  # noqa: F401  (venv's pip comes from it)
    except ImportError:
        pytest.skip("this Python has no ensurepip, so `python -m venv` cannot install pip")
    snippet = _readme_snippet()
    parent = tmp_path / "parent"
    clone = parent / "quantkit"
    _copy_checkout(clone)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    # a user's shell: no PYTHONPATH pointing at this checkout (the developer's may)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    # the README's install command (`pip install -e .`), without dependencies: the system
    # site-packages already hold them
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e",
                              str(clone)], capture_output=True, text=True, timeout=300, env=env)
    assert install.returncode == 0, install.stdout + install.stderr
    _inputs(parent)
    check = ("\nimport pathlib\n"
             "print('QUANTKIT_FROM', pathlib.Path(quantkit.__file__).resolve())\n"
             "print('ROWS', len(df))\n")
    run = subprocess.run([str(python), "-c", snippet + check], cwd=parent, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"QUANTKIT_FROM {(clone / 'quantkit' / '__init__.py').resolve()}" in run.stdout
    assert "ROWS 2" in run.stdout
    cache = (parent / "model.cache").read_text(encoding="latin-1")
    assert cache.startswith("TRT-") and "input:" in cache
    assert (parent / "results" / "results.csv").exists()
