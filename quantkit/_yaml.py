"""Reading YAML files safely, with errors that name the file, the line and the fix.

Every YAML file quantkit reads (recipes, precision files, preprocess files) goes through
:func:`load_yaml`, which never executes tags and bounds what a small hostile file can cost
before anything is built from it: the file's size, its nesting depth and the number of values
it expands to when anchors and aliases (``&a`` / ``*a``) are followed. An "alias bomb" of a
few hundred bytes that would expand to billions of values is refused from the parsed node
graph, without expanding it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantkit.errors import InputError

#: largest YAML file read (bytes); quantkit's YAML files are a few kilobytes
MAX_BYTES = 16 * 1024 * 1024
#: most values (scalars, mappings, lists) a document may expand to, aliases followed
MAX_NODES = 200_000
#: deepest nesting of mappings and lists
MAX_DEPTH = 100


def _expanded_size(root: Any, p: Path, what: str) -> int:
    """Number of nodes ``root`` stands for with every alias expanded (memoised, no expansion).

    Aliases share node objects, so the size of a node is computed once per object; the total
    is capped at :data:`MAX_NODES` as soon as it is exceeded. Also enforces :data:`MAX_DEPTH`.
    """
    import yaml

    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: (node, depth, children visited?)
    stack: list[tuple[Any, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            if isinstance(node, yaml.MappingNode):
                children = [c for kv in node.value for c in kv]
            else:
                children = list(node.value)
            total = 1 + sum(sizes[id(c)] for c in children)
            sizes[key] = min(total, MAX_NODES + 1)
            if sizes[key] > MAX_NODES:
                raise InputError(
                    f"{what} {p}: the document expands to more than {MAX_NODES:,} values when "
                    "its YAML anchors and aliases (&name / *name) are followed; it looks like an "
                    "alias bomb. quantkit files need no such repetition: write the values out.")
            continue
        if key in sizes:
            continue
        if depth > MAX_DEPTH:
            raise InputError(f"{what} {p}: nested more than {MAX_DEPTH} levels deep; quantkit "
                             "files are a few levels of mappings and lists. Check the file.")
        if isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
            continue
        if key in on_path:  # a recursive structure (PyYAML can build them)
            raise InputError(f"{what} {p}: a YAML alias refers to a value that contains it; "
                             "quantkit files cannot be recursive.")
        on_path.add(key)
        stack.append((node, depth, True))
        children = [c for kv in node.value for c in kv] if isinstance(node, yaml.MappingNode) \
            else list(node.value)
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)
    return sizes.get(id(root), 0)


def load_yaml(path: str | Path, what: str) -> Any:
    """``yaml.safe_load`` a file (never executes anything it reads), with size guards.

    A UTF-8 byte-order mark at the start is accepted.

    Args:
        path: the file.
        what: how to name it in errors, e.g. ``"--precision P.yaml"`` or ``"recipe"``.

    Raises:
        InputError: missing/unreadable file, a syntax error with its line and column, or a
            document over the size limits (bytes, nesting depth, values with aliases expanded).
    """
    import yaml

    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_file() and size > MAX_BYTES:
            raise InputError(f"{what} {p}: {size:,} bytes, more than the {MAX_BYTES:,} a "
                             "quantkit YAML file may have. Check that this is the right file.")
        with open(p, "rb") as fh:  # bounded read: a pipe or device has no useful size
            raw = fh.read(MAX_BYTES + 1)
        text = raw.decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{what} {p}: no such file.") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{what} {p}: not UTF-8 text ({err.reason} at byte {err.start}). "
                         "Save the file as UTF-8.") from err
    except IsADirectoryError:
        raise InputError(f"{what} {p}: is a folder; give the YAML file.") from None
    except OSError as err:
        raise InputError(f"{what} {p}: cannot read it: {err.strerror or err}.") from err
    if len(raw) > MAX_BYTES:  # a FIFO or device grows past its stat size
        raise InputError(f"{what} {p}: more than {MAX_BYTES:,} bytes; not a quantkit file.")
    loader: Any = None
    try:
        loader = yaml.SafeLoader(text)  # reads the first characters: can raise a ReaderError
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, p, what)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark else str(p)
        raise InputError(f"{where}: YAML syntax error: {err.problem}.") from err
    except yaml.YAMLError as err:
        raise InputError(f"{p}: YAML error: {str(err)[:300]}") from err
    except RecursionError:
        raise InputError(f"{what} {p}: nested too deeply to be a quantkit file.") from None
    finally:
        if loader is not None:
            loader.dispose()
