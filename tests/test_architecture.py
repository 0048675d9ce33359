"""The layering of docs/architecture.md, enforced on every import in quantkit/.

Walks each module's AST (module-level imports, imports inside functions and ``TYPE_CHECKING``
blocks alike) and fails on (a) a cycle between packages, (b) an import of a higher layer than
the importer's, (c) an import of another package's private (``_name``) module, other than the
shared top-level utilities ``quantkit._io`` / ``_log`` / ``_yaml`` / ``_ort`` / ``_lazy``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "quantkit"
DOC = ROOT / "docs" / "architecture.md"
SHARED_PRIVATE = frozenset({"_io", "_log", "_yaml", "_ort", "_lazy"})


@dataclass(frozen=True)
class Import:
    """One imported quantkit module, as seen in a source file."""

    file: str  # path relative to the repository root
    importer: str  # dotted module name of the file
    target: str  # dotted module name imported (``quantkit`` for names of the root)
    line: int


def layers_from_doc(text: str) -> dict[str, int]:
    """Package -> layer number, from the first ``text`` code block after ``## Layers``."""
    m = re.search(r"^## Layers\n.*?^```text\n(.*?)^```", text, re.S | re.M)
    if m is None:
        raise AssertionError("docs/architecture.md has no '## Layers' block")
    out: dict[str, int] = {}
    for level, line in enumerate(ln for ln in m.group(1).splitlines() if ln.strip()):
        for name in line.split():
            out[name] = level
    return out


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str, root: Path) -> bool:
    rel = Path(*dotted.split("."))
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def imports_of(path: Path, root: Path) -> Iterator[Import]:
    """Every quantkit module ``path`` imports (``root`` is the folder holding ``quantkit/``)."""
    importer = module_name(path, root)
    is_pkg = path.name == "__init__.py"
    rel = path.relative_to(root).as_posix()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "quantkit":
                    yield Import(rel, importer, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "quantkit":
                continue
            subs = [f"{mod}.{a.name}" for a in node.names if _is_module(f"{mod}.{a.name}", root)]
            if mod != "quantkit" or len(subs) < len(node.names):
                yield Import(rel, importer, mod, node.lineno)  # names of the module itself
            for sub in subs:
                yield Import(rel, importer, sub, node.lineno)


def package_of(module: str) -> str:
    """``quantkit.qdq.writer`` -> ``qdq``; ``quantkit.errors`` -> ``errors``; root -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def is_private_import(imp: Import) -> bool:
    """Whether ``imp`` reaches into another package's private module."""
    src, dst = package_of(imp.importer), package_of(imp.target)
    parts = imp.target.split(".")[1:]
    if not parts or src == dst:
        return False
    if parts[0] in SHARED_PRIVATE and len(parts) == 1:
        return False
    return any(p.startswith("_") and not p.startswith("__") for p in parts)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def violations(imports: Iterable[Import], layers: dict[str, int]) -> list[str]:
    """Every breach of the layering among ``imports``, one line each."""
    out: list[str] = []
    edges: dict[str, set[str]] = {}
    for imp in imports:
        src, dst = package_of(imp.importer), package_of(imp.target)
        where = f"{imp.file}:{imp.line}: {imp.target}"
        if src == "" or src == dst:
            continue  # the root facade imports lazily; a package may use itself
        if dst == "":
            continue  # names defined by the root (checked in the test below)
        edges.setdefault(src, set()).add(dst)
        for pkg in (src, dst):
            if pkg not in layers:
                out.append(f"{where}: package '{pkg}' is not in docs/architecture.md's layers")
        if src in layers and dst in layers and layers[dst] > layers[src]:
            out.append(f"{where}: {src} (layer {layers[src]}) imports {dst}, a higher layer "
                       f"({layers[dst]})")
        if is_private_import(imp):
            out.append(f"{where}: private module of another package; make the name public "
                       f"in quantkit.{dst}")
    out.extend(f"package cycle: {' <-> '.join(c)}" for c in cycles(edges))
    return out


def _all_imports() -> list[Import]:
    return [imp for p in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(p, ROOT)]


def test_quantkit_follows_the_documented_layers() -> None:
    layers = layers_from_doc(DOC.read_text(encoding="utf-8"))
    bad = violations(_all_imports(), layers)
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_every_package_has_a_layer() -> None:
    layers = layers_from_doc(DOC.read_text(encoding="utf-8"))
    present = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    present |= {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert not present - set(layers), f"document the layer of {sorted(present - set(layers))}"


def test_root_is_imported_only_for_its_own_names() -> None:
    import quantkit

    own = {n for n in vars(quantkit) if n.startswith("__") and n.endswith("__")}
    for p in sorted(PACKAGE.rglob("*.py")):
        if p == PACKAGE / "__init__.py":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "quantkit" and not node.level:
                names = {a.name for a in node.names}
                assert names <= own | {m for m in names if _is_module(f"quantkit.{m}", ROOT)}, \
                    (p, names)


def test_root_facade_loads_only_errors_at_import() -> None:
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module
           and n.module.startswith("quantkit")]
    assert {n.module for n in top} <= {"quantkit.errors"}


# --- the checker itself ------------------------------------------------------------------------

_FAKE = {
    "quantkit/__init__.py": "from quantkit.errors import QuantkitError\n",
    "quantkit/errors.py": "",
    "quantkit/_io.py": "from quantkit.errors import QuantkitError\n",
    "quantkit/low/__init__.py": "",
    "quantkit/low/_impl.py": "X = 1\n",
    "quantkit/low/api.py": ("from quantkit import _io\nfrom quantkit.low import _impl\n"
                            "def f():\n    from quantkit.high.mod import g\n"),
    "quantkit/high/__init__.py": "",
    "quantkit/high/mod.py": ("from quantkit.low._impl import X\nfrom quantkit import __version__\n"
                             "from . import other\n"),
    "quantkit/high/other.py": "from ..errors import QuantkitError\n",
}


@pytest.fixture()
def fake_tree(tmp_path: Path) -> Path:
    for rel, text in _FAKE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_checker_finds_order_private_and_cycle_violations(fake_tree: Path) -> None:
    imports = [i for p in sorted((fake_tree / "quantkit").rglob("*.py"))
               for i in imports_of(p, fake_tree)]
    targets = {(i.importer, i.target) for i in imports}
    assert ("quantkit.high.mod", "quantkit.high.other") in targets  # relative import resolved
    assert ("quantkit.high.other", "quantkit.errors") in targets
    assert ("quantkit.low.api", "quantkit._io") in targets  # `from quantkit import _io`
    assert ("quantkit.low.api", "quantkit.high.mod") in targets  # inside a function
    layers = layers_from_doc("## Layers\n```text\nerrors\n_io\nlow\nhigh\n```\n")
    assert layers == {"errors": 0, "_io": 1, "low": 2, "high": 3}
    found = violations(imports, layers)
    assert found == [
        "quantkit/high/mod.py:1: quantkit.low._impl: private module of another package; make "
        "the name public in quantkit.low",
        "quantkit/low/api.py:4: quantkit.high.mod: low (layer 2) imports high, a higher layer (3)",
        "package cycle: high <-> low",
    ]
    # an undocumented package is reported too
    assert any("'low' is not in" in v for v in violations(imports, {"errors": 0, "_io": 1,
                                                                     "high": 3}))
