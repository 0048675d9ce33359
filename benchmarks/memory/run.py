#!/usr/bin/env python
"""Peak memory of calibration, one pass vs within a memory budget (issue 18).

Exports ResNet-50 (the plain-torch builder of ``benchmarks/latency/models.py``, random
weights) and ViT-B/16 (defined here, random weights) to ONNX once, then calibrates each with
quantkit's entropy method at batch 32 in a fresh child process per run, with and without a
memory budget. Each child reports its own peak RSS (``VmHWM`` of ``/proc/self/status``: a
child's ``ru_maxrss`` inherits its parent's high-water mark) and the wall time of the
``calibrate`` call (imports and export excluded), and saves its scales; the parent checks that
the budgeted run's scales equal the one-pass scales bit for bit.

    python -m benchmarks.memory.run --models resnet50 --samples 64
    python -m benchmarks.memory.run --models vit_b16 --budgets 1GiB --no-one-pass

torch is a dev dependency: it is used here, never by ``quantkit``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CACHE = Path(__file__).resolve().parents[1] / "_work" / "memory"


def _vit_b16() -> Any:
    """ViT-B/16 at 224 (12 layers, hidden 768, 12 heads, MLP 3072), random weights."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(768), nn.LayerNorm(768)
            self.qkv, self.proj = nn.Linear(768, 3 * 768), nn.Linear(768, 768)
            self.fc1, self.fc2 = nn.Linear(768, 3072), nn.Linear(3072, 768)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, length, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).reshape(n, length, 3, 12, 64).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / 8.0, dim=-1)
            x = x + self.proj((att @ v).transpose(1, 2).reshape(n, length, 768))
            return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))

    class ViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 768, 16, 16)
            self.cls = nn.Parameter(torch.randn(1, 1, 768) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, 197, 768) * 0.02)
            self.blocks = nn.Sequential(*[Block() for _ in range(12)])
            self.ln = nn.LayerNorm(768)
            self.head = nn.Linear(768, 1000)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
            return self.head(self.ln(self.blocks(x))[:, 0])

    return ViT().eval()


def export(name: str) -> Path:
    """``CACHE/<name>.onnx`` (opset 17, dynamic batch), exported once."""
    path = CACHE / f"{name}.onnx"
    if path.exists():
        return path
    import torch

    torch.manual_seed(0)
    if name == "resnet50":
        from benchmarks.latency.models import resnet50

        model = resnet50()[0].eval()
    else:
        model = _vit_b16()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.onnx")
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(tmp),
                          input_names=["input"], output_names=["logits"], opset_version=17,
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          do_constant_folding=True, dynamo=False)
    os.replace(tmp, path)
    return path


def child(args: argparse.Namespace) -> None:
    """One calibration; print ``{"peak_rss", "seconds", "stages"}`` as JSON."""
    import logging
    import time

    import numpy as np

    from quantkit.capture import calibrate

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = np.load(args.data, mmap_mode="r")
    budget = None if args.budget == "default" else args.budget  # None: quantkit's default
    start = time.perf_counter()
    extra = {} if budget == "legacy" else {"memory_budget": budget}  # legacy: no such option
    res = calibrate(args.model, args.data, method="entropy", batch_size=args.batch_size,
                    **extra)
    seconds = time.perf_counter() - start
    peak = next(int(line.split()[1]) * 1024 for line in
                Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    Path(args.scales).write_text(json.dumps(res.scales.amaxes))
    print(json.dumps({"peak_rss": peak, "seconds": seconds, "samples": res.num_samples,
                      "data_shape": list(data.shape)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["resnet50"],
                        choices=["resnet50", "vit_b16"])
    parser.add_argument("--budgets", nargs="+", default=["default"],
                        help="memory budgets to run (a size, or 'default')")
    parser.add_argument("--no-one-pass", action="store_true",
                        help="skip the one-pass run (ViT-B/16 needs > 20 GB for it)")
    parser.add_argument("--baseline", metavar="TREE", default=None,
                        help="also run one pass with the quantkit of this checkout (e.g. the "
                             "main branch before memory budgets), as 'baseline'")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--budget", help=argparse.SUPPRESS)
    parser.add_argument("--scales", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory(prefix="qk-memory-") as tmp:
        data = Path(tmp) / "x.npy"
        rng = np.random.default_rng(0)
        np.save(data, rng.standard_normal((args.samples, 3, 224, 224)).astype(np.float32))
        for name in args.models:
            model = export(name)
            runs = ([("baseline", "legacy")] if args.baseline else []) + (
                [] if args.no_one_pass else [("one pass", "1TiB")]) + [
                (f"budget {b}", b) for b in args.budgets]
            scales: dict[str, dict[str, float]] = {}
            for label, budget in runs:
                out = Path(tmp) / f"{name}-{len(scales)}.json"
                cmd = [sys.executable, __file__, "--child", "--model", str(model), "--data",
                       str(data), "--budget", budget, "--scales", str(out),
                       "--batch-size", str(args.batch_size)]
                env = dict(os.environ)
                if budget == "legacy":
                    env["PYTHONPATH"] = str(args.baseline)
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
                if proc.returncode:
                    rows.append((name, label, "failed", proc.stderr.strip()[-300:], ""))
                    continue
                got = json.loads(proc.stdout.strip().splitlines()[-1])
                stages = next((ln for ln in proc.stderr.splitlines() if "stages" in ln), "")
                scales[label] = json.loads(out.read_text())
                rows.append((name, label, f"{got['peak_rss'] / 2**30:.2f} GiB",
                             f"{got['seconds']:.1f} s", stages.split(":")[0]))
            ours = {k: v for k, v in scales.items() if k != "baseline"}
            if len(ours) > 1:
                ref = next(iter(ours.values()))
                same = all(s == ref for s in ours.values())
                rows.append((name, f"scales identical ({', '.join(ours)})", str(same), "", ""))
            if "baseline" in scales and ours:
                ref, base = next(iter(ours.values())), scales["baseline"]
                rel = max(abs(ref[k] - base[k]) / max(abs(base[k]), 1e-30) for k in base)
                rows.append((name, "max relative scale difference to baseline",
                             f"{rel:.2g}", "", ""))
    print("| model | run | peak RSS (VmHWM) | calibrate() wall time | stages |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
