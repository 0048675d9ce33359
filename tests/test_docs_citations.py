"""Every Markdown document that quantkit's code, comments or messages cite must exist in this
repository, and every ``doc.md#anchor`` must be a heading of that document (GitHub's slugs).

A citation of a file users cannot open (a team note outside the repository, a renamed section)
is a dead end in a lint message or a docstring, so it fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "quantkit"

#: ``path/to/doc.md`` or ``doc.md``, optionally followed by ``#anchor``.
CITATION = re.compile(r"(?<![\w./-])((?:[\w.-]+/)*[\w.-]+\.md)(?:#([\w-]*))?")

#: Markdown files quantkit *writes* (named in code as outputs, not cited as documents).
WRITTEN_FILES = frozenset({"summary.md"})

def github_slugs(markdown: str) -> set[str]:
    """The anchors GitHub generates for the headings of a Markdown document.

    Lower case; link targets and every character but letters, digits, ``_``, ``-`` and spaces
    dropped; spaces become ``-``; a repeated slug gets ``-1``, ``-2``... Headings inside fenced
    code blocks do not count.
    """
    slugs: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or m is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # [text](url) -> text
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def citation_problems(text: str, root: Path = ROOT) -> list[tuple[str, str]]:
    """``(citation, problem)`` for each cited document or anchor that does not resolve.

    Paths are relative to the repository root.
    """
    problems = []
    for m in CITATION.finditer(text):
        doc, anchor = m.group(1), m.group(2)
        if Path(doc).name in WRITTEN_FILES:
            continue
        path = root / doc
        if not path.is_file():
            problems.append((m.group(0), f"{doc} is not a file of the repository"))
        elif anchor is not None and anchor not in github_slugs(path.read_text(encoding="utf-8")):
            problems.append((m.group(0), f"{doc} has no heading with the anchor #{anchor}"))
    return problems


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*") if p.is_file()
                  and p.suffix in (".py", ".md", ".yaml", ".yml", ".txt", ".json", ".html"))


def test_slugs_follow_github_rules() -> None:
    doc = ("# Title\n## Q/DQ placement\n### `quantize` --precision\n## Running engines\n"
           "## Running engines\n```\n# not a heading\n```\n## See [the guide](x.md#y) now\n"
           "## TensorRT 10.x / 11.x\n")
    assert github_slugs(doc) == {"title", "qdq-placement", "quantize---precision",
                                 "running-engines", "running-engines-1", "see-the-guide-now",
                                 "tensorrt-10x--11x"}


def test_checker_reports_missing_documents_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "rules.md").write_text("# Rules\n## Q/DQ placement\n")
    text = ("see docs/rules.md#qdq-placement and docs/rules.md, FACTS.md, "
            "docs/rules.md#qdq and docs/other.md#x; writes summary.md")
    assert citation_problems(text, tmp_path) == [
        ("FACTS.md", "FACTS.md is not a file of the repository"),
        ("docs/rules.md#qdq", "docs/rules.md has no heading with the anchor #qdq"),
        ("docs/other.md#x", "docs/other.md is not a file of the repository"),
    ]


def test_package_cites_only_documents_of_the_repository() -> None:
    bad: list[str] = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for citation, problem in citation_problems(path.read_text(encoding="utf-8")):
            bad.append(f"{rel}: {citation}: {problem}")
    assert not bad, "dead citations:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", ["docs/tensorrt_rules.md", "docs/cli.md"])
def test_rule_documents_cite_consistently(doc: str) -> None:
    # the documents themselves link each other by relative path; those links must resolve too
    text = (ROOT / doc).read_text(encoding="utf-8")
    links = re.findall(r"\]\(([\w./-]*\.md)?(?:#([\w-]+))?\)", text)
    assert links
    for target, anchor in links:
        path = (ROOT / doc).parent / target if target else ROOT / doc
        assert path.is_file(), (doc, target)
        if anchor:
            assert anchor in github_slugs(path.read_text(encoding="utf-8")), (doc, target, anchor)
