"""The HTML report: self-contained, complete, and correct about the Pareto front."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sweep_dirs import make_sweep

from quantkit.report import load_sweep, pareto_front, render_html, with_derived, write_report
from quantkit.report.load import quality_column

CHROMIUM = Path("/usr/bin/chromium")


class _Refs(HTMLParser):
    """Every attribute that can load something, and the rows of the results table."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.rows: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        d = {k: v or "" for k, v in attrs}
        for key in ("src", "href", "srcset", "data", "poster", "action", "background"):
            if key in d:
                self.refs.append((tag, key, d[key]))
        if tag == "tr" and "data-config" in d:
            self.rows[d["data-config"]] = d.get("class", "")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = make_sweep(tmp_path_factory.mktemp("r") / "sweep", n_layers=60)
    path = write_report(root)
    return root, path.read_text(encoding="utf-8")


def test_no_external_references(report: tuple[Path, str]) -> None:
    _, page = report
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "url(" not in page
    parsed = _Refs()
    parsed.feed(page)
    assert parsed.refs, "the report has images"
    for tag, key, value in parsed.refs:
        assert tag == "img" and key == "src", (tag, key)
        assert value.startswith("data:image/png;base64,")
        assert base64.b64decode(value.split(",", 1)[1]).startswith(b"\x89PNG")
    assert {"iframe", "object", "embed", "video", "audio"}.isdisjoint(parsed.tags)
    # URLs the sweep recorded (an error message, a recipe comment) stay text, not links
    assert "example.invalid/docs" in page and "example.invalid/model" in page


def test_three_inline_images(report: tuple[Path, str]) -> None:
    _, page = report
    # Pareto, where the time goes, precision, sensitivity
    assert page.count('<img src="data:image/png;base64,') == 4


def test_table_rows_failed_rows_and_pareto_markers(report: tuple[Path, str]) -> None:
    root, page = report
    parsed = _Refs()
    parsed.feed(page)
    df = with_derived(load_sweep(root))
    assert list(parsed.rows) == list(df["config"])
    expected = pareto_front(df, y=quality_column(df), higher_is_better=True)
    for config, on_front in zip(df["config"], expected, strict=True):
        assert ("pareto" in parsed.rows[config].split()) == bool(on_front), config
    assert {c for c, cls in parsed.rows.items() if "pareto" in cls} == {
        "fp32", "fp16", "int8-entropy", "int8-percentile", "mixed-fp16-head", "auto"}
    assert "failed" in parsed.rows["int8-mse"] and "failed" in parsed.rows["int8-rtx-opt5"]
    assert "calibration produced no finite range" in page
    assert "TensorRT-RTX parser: unsupported node /head/fc/Gemm" in page
    row = re.search(r'<tr[^>]*data-config="int8-entropy".*?</tr>', page)
    assert row is not None
    # the L4 estimate is the primary latency; the T4 estimate (x1.9) gets its own column; the
    # CPU fake-quant timing (x9 in sweep_dirs) is in its own column, labelled
    for cell in ("75.61", "−0.52", "97.8%", "1.60 (estimated)", "2.56×",
                 "14.4 (cpu-fake-quant)", "3.04", "6.3 MiB (0.26×)", "32 / 0 / 28",
                 "tensorrt-rtx 1.7.0 (7.1 MiB)"):
        assert f">{cell}<" in row.group(0), cell
    assert "latency ms (L4, batch 32) (source)" in page and "estimated ms, T4" in page
    # estimates only: no p99 and no spread columns (an estimate has neither)
    assert ">p99 ms<" not in page and "p50 spread" not in page
    cpu_page = render_html(load_sweep(make_sweep(root.parent / "cpu", source="cpu")))
    assert ">p99 ms<" in cpu_page and ">1.57–1.63 (5 rounds)<" in cpu_page  # 1.60 ± 2 %
    fp32 = re.search(r'<tr[^>]*data-config="fp32".*?</tr>', page)
    assert fp32 is not None and ">20.5 (cpu)<" in fp32.group(0)
    nan_row = re.search(r'<tr[^>]*data-config="int8-percentile".*?</tr>', page)
    assert nan_row is not None and '<td class="num">—</td>' in nan_row.group(0)


def test_headline_and_sections(report: tuple[Path, str]) -> None:
    _, page = report
    assert "<title>quantkit report: resnet_tiny.onnx (2025-05-04 10:20 UTC)</title>" in page
    assert ("Headline config: int8-percentile: top1 −0.23 vs fp32 (worse), 2.53× faster "
            "(estimated, L4, batch 32)") in page
    assert 'id="headline-rule"' in page and "within 0.5 top1 points of the best" in page
    assert 'id="latency-note"' not in page  # an estimate exists: no CPU-only sentence
    assert 'id="time"' in page and "__myl_CastMulAdd_myl0_2" in page  # where the time goes
    assert "entropy calibration clipped 2 tensor(s)" in page  # warnings and calibration
    assert "compare the tensor /head/fc/Gemm_output_0" in page
    assert "built with TensorRT-RTX 1.7.0 for 1 of 9 configs" in page
    for section in ('id="pareto"', 'id="results"', 'id="precision"', 'id="sensitivity"',
                    'id="autotune"', 'id="calibration"', 'id="engine"', 'id="environment"',
                    'id="warnings"'):
        assert section in page, section
    assert "percentile=99.99" in page  # calibration settings
    assert "the precision plan says int8, the parsed network has fp32" in page
    assert "softmax_half_0" in page
    assert "onnxruntime" in page and "1.20.1" in page and "recipe.yaml" in page
    assert "layers kept FP16" in page


def test_lower_is_better_sweep(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "s", metric="cer", optional=False)
    sweep = load_sweep(root)
    page = render_html(sweep)
    df = with_derived(sweep)
    parsed = _Refs()
    parsed.feed(page)
    front = pareto_front(df, higher_is_better=False)
    assert [c for c, cls in parsed.rows.items() if "pareto" in cls] == list(df["config"][front])
    # CER = (100 - top1) / 4: the lowest CER is fp32's; mixed-fp16-head is the best INT8
    # every INT8 config is within 0.5 CER points; the fastest (int8-entropy, 1.60 ms) leads,
    # int8-minmax and int8-percentile are within the estimates' 5 % tie band
    assert "Headline config: int8-entropy: cer +0.13 vs fp32 (worse)" in page
    assert "the same latency within noise: int8-minmax, int8-percentile" in page
    parsed_ties = {c for c, cls in parsed.rows.items() if "tie" in cls.split()}
    assert parsed_ties == {"int8-minmax", "int8-percentile"}
    assert "lower is better" in page
    assert "TensorRT engine: build failed for 1 config" in page
    assert 'id="sensitivity"' not in page and 'id="autotune"' not in page
    assert "No engine sidecar" in page


def test_cpu_only_report_says_so_visibly(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "s", source="cpu", optional=False)
    page = render_html(load_sweep(root))
    note = re.search(r'<p class="warn" id="latency-note"><strong>(.*?)</strong></p>', page)
    assert note is not None
    assert note.group(1).startswith("All latency here is ONNX Runtime on this machine&#x27;s "
                                    "CPU, not TensorRT")
    assert ">not compared<" in page and "speed-up" in page
    assert "faster" not in re.sub(r"<[^>]+>", " ", page).split("Headline rule")[0]
    assert "the most accurate (then the highest agreement and SQNR)" in page


def test_tolerance_from_the_recipe(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "s", optional=False)
    with (root / "recipe.yaml").open("a", encoding="utf-8") as fh:
        fh.write("report: {tolerance: 0.1}\n")
    page = render_html(load_sweep(root))
    # 0.1 points below fp32 (76.13): no INT8 config (mixed-fp16-head is 0.13 below)
    assert "No INT8 config is within 0.1 top1 points of the best" in page
    assert "Headline config: int8-percentile" in render_html(load_sweep(root), tolerance=0.5)


def test_write_report_outputs(tmp_path: Path) -> None:
    root = make_sweep(tmp_path / "s", optional=False)
    (tmp_path / "review").mkdir()
    out = write_report(root, tmp_path / "review" / "r.html")
    assert out == tmp_path / "review" / "r.html" and out.is_file()
    assert (tmp_path / "review" / "summary.md").is_file()
    assert not (root / "report.html").exists()
    leftovers = [p.name for p in (tmp_path / "review").iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_chromium_renders_the_report_offline(report: tuple[Path, str], tmp_path: Path) -> None:
    from PIL import Image

    root, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
                    f"--screenshot={shot}", "--window-size=1400,3000",
                    (root / "report.html").as_uri()], check=True, capture_output=True,
                   timeout=120)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1400, 3000)
    colors = image.resize((140, 300)).getcolors(maxcolors=100_000)
    assert colors is not None and len(colors) > 50  # text and plots, not a blank page
    # the plot's green INT8 markers and the precision map's cells were drawn
    assert any(abs(r - 0) < 30 and abs(g - 158) < 30 and abs(b - 115) < 30
               for _, (r, g, b) in colors)
    shutil.rmtree(tmp_path / "p", ignore_errors=True)
