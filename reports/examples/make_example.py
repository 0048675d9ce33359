r"""Regenerate ``reports/examples/demo`` from a real run of ``quantkit demo``.

Usage::

    python reports/examples/make_example.py   # quantkit[rtx] adds the engine builds

Writes ``report.html``, ``summary.md`` and ``results.csv`` of the demo sweep here; take the
screenshot with headless Chromium::

    chromium --headless --no-sandbox --disable-gpu --disable-background-networking \\
        --user-data-dir=$(mktemp -d) --screenshot=reports/examples/demo/report.png \\
        --window-size=1400,3000 file://$PWD/reports/examples/demo/report.html
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from quantkit.demo import run_demo
from quantkit.report import write_report

HERE = Path(__file__).resolve().parent / "demo"


def main() -> None:
    """Run the demo in a temporary folder and copy its report here."""
    with tempfile.TemporaryDirectory() as tmp:
        results, _ = run_demo(tmp)
        write_report(results)
        HERE.mkdir(exist_ok=True)
        for name in ("report.html", "summary.md", "results.csv"):
            shutil.copyfile(results / name, HERE / name)
    print(f"wrote {HERE}")


if __name__ == "__main__":
    main()
