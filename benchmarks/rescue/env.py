"""Peer venvs and machine facts for ``rescue/peers.py`` (dev venv only).

Each peer gets its own venv, ``benchmarks/_work/venv-<peer>``, made with the dev venv's
Python (3.11) and ``pip install`` of the pinned requirements below (one pip command, so pip
resolves them together). A venv is reused when its marker file records the same requirements
and its import probe passes; otherwise it is rebuilt. The outcome of every install (ok, pip's
error lines, the probe's traceback) goes into ``results.json``: a peer that does not install or
does not import is reported with the reason and skipped, the run goes on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks._harness import cpu_model, mem_total_gib, os_release, package_versions, utc_now

#: peer -> (pip requirements, import probe printing "name version" pairs, why the pins).
PEERS: dict[str, dict[str, Any]] = {
    "nncf": {
        "requirements": ["nncf==3.4.0", "onnx==1.23.2", "onnxruntime==1.32.0"],
        "probe": "import nncf, onnx, onnxruntime; "
                 "print('nncf', nncf.__version__, 'onnx', onnx.__version__, "
                 "'onnxruntime', onnxruntime.__version__)",
        "why": "latest NNCF; its ONNX backend needs onnx + onnxruntime (same versions as the "
               "dev venv); no torch needed for ONNX models",
    },
    "aimet": {
        "requirements": ["aimet-onnx==2.42.0", "onnx==1.23.2", "onnxruntime==1.32.0",
                         "torch==2.14.1", "torchvision==0.29.1"],
        "probe": "import aimet_onnx, onnx, onnxruntime, torch; "
                 "from aimet_onnx.quantsim import QuantizationSimModel; "
                 "from aimet_onnx.cross_layer_equalization import equalize_model; "
                 "print('aimet_onnx', aimet_onnx.__version__, 'onnx', onnx.__version__, "
                 "'onnxruntime', onnxruntime.__version__, 'torch', torch.__version__)",
        "why": "latest aimet-onnx (cp310-abi3 manylinux_2_34 wheel, CPU build; this VM has "
               "glibc 2.36); it depends on torch + torchvision (through onnx2torch): pinned "
               "to what pip resolves here",
    },
    "ppq": {
        "requirements": ["ppq==0.6.6", "torch==2.13.0", "onnx==1.15.0", "protobuf==3.20.3",
                         "numpy<2"],
        "probe": "from importlib.metadata import version; import ppq, onnx, torch; "
                 "from ppq.api import quantize_onnx_model; print('ppq', version('ppq'), "
                 "'onnx', onnx.__version__, 'torch', torch.__version__)",
        "why": "ppq 0.6.6 (2023, the last release) imports onnx.mapping (removed from onnx "
               ">= 1.16) and ships protobuf code generated for protobuf <= 3.20 (\"Descriptors "
               "cannot be created directly\" with protobuf 4+): onnx 1.15.0, protobuf 3.20.3, "
               "numpy<2 (onnx 1.15 is built against numpy 1.x); torch 2.13.0 = the CPU "
               "wheel of this machine (ppq needs no torchvision)",
    },
}


def _pip_error(text: str) -> str:
    """The lines of a pip log that say why it failed."""
    keep = [line for line in text.splitlines()
            if re.search(r"ERROR|error:|No matching distribution|Could not find|requires|"
                         r"conflict|incompatible", line)]
    return "\n".join(keep[-12:]) or text[-1500:]


def ensure_venv(peer: str, work: Path, log: Any, timeout: float = 1800) -> dict[str, Any]:
    """Create or reuse ``work/venv-<peer>``. Returns the install outcome (``ok``, ``python``,
    ``versions``, ``reused``, ``install_s``, ``error``)."""
    spec = PEERS[peer]
    venv = work / f"venv-{peer}"
    py = venv / "bin" / "python"
    marker = venv / "quantkit-rescue-install.json"
    logfile = work / "rescue-peers" / f"install-{peer}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")

    def probe() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(py), "-c", spec["probe"]], capture_output=True, text=True,
                              timeout=600, env=dict(env, NNCF_CI="1"))

    base = {"peer": peer, "requirements": spec["requirements"], "why_pins": spec["why"],
            "venv": str(venv), "log": str(logfile)}
    if py.exists() and marker.exists():
        info = json.loads(marker.read_text())
        if info.get("requirements") == spec["requirements"]:
            r = probe()
            if r.returncode == 0:
                return {**base, **info, "ok": True, "reused": True, "python": str(py),
                        "versions": _pairs(r.stdout)}
    shutil.rmtree(venv, ignore_errors=True)
    t0 = time.perf_counter()
    steps = [[sys.executable, "-m", "venv", str(venv)],
             [str(py), "-m", "pip", "install", *spec["requirements"]]]
    with open(logfile, "w") as lf:
        for cmd in steps:
            log(f"{peer} venv: {' '.join(cmd[2:])}")
            lf.write(f"$ {' '.join(cmd)}\n")
            lf.flush()
            left = timeout - (time.perf_counter() - t0)
            try:
                r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                   timeout=max(left, 1))
            except subprocess.TimeoutExpired:
                return {**base, "ok": False, "stage": "install",
                        "error": f"install took longer than {timeout:.0f} s"}
            if r.returncode:
                lf.flush()
                return {**base, "ok": False, "stage": "install", "returncode": r.returncode,
                        "error": _pip_error(logfile.read_text(errors="replace"))}
        subprocess.run([str(py), "-m", "pip", "freeze"], stdout=lf, stderr=subprocess.STDOUT)
    r = probe()
    if r.returncode:
        return {**base, "ok": False, "stage": "import", "install_s": time.perf_counter() - t0,
                "error": (r.stderr or r.stdout)[-1500:]}
    info = {"requirements": spec["requirements"],
            "install_s": round(time.perf_counter() - t0, 1),
            "installed_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    marker.write_text(json.dumps(info))
    return {**base, **info, "ok": True, "reused": False, "python": str(py),
            "versions": _pairs(r.stdout)}


def _pairs(text: str) -> dict[str, str]:
    """``{name: version}`` from the probe's last line (ppq prints a banner first)."""
    lines = text.strip().splitlines()
    words = lines[-1].split() if lines else []
    return dict(zip(words[::2], words[1::2], strict=False))


def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory, OS, Python and package versions of the dev venv."""
    cpu = cpu_model()
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    versions = package_versions(("quantkit", "numpy", "onnx", "onnxruntime",
                                 "tensorrt_rtx_cu13_bindings"))
    return {"date_utc": utc_now(),
            "cpu_model": cpu, "nproc": nproc, "os_cpu_count": os.cpu_count(),
            "mem_total_gib": mem_total_gib(), "os": os_release(),
            "versions": versions, "argv": sys.argv,
            "loadavg_start": Path("/proc/loadavg").read_text().strip()}


__all__ = ["PEERS", "ensure_venv", "machine_info"]
