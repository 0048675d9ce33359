"""Plain-text tables for command output."""

from __future__ import annotations

from collections.abc import Sequence

import click


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]],
                max_width: int = 60) -> None:
    """Print an aligned table to stdout; long cells are shortened in the middle."""

    def cell(v: object) -> str:
        s = str(v)
        return s if len(s) <= max_width else s[: max_width // 2 - 2] + "..." + s[-(max_width // 2
                                                                                  - 1):]

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * w for w in widths))
    for r in body:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
