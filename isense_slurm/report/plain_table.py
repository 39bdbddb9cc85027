"""Plain text tables for piping: sinfo-style columns, no colour, no wrapping."""

from collections.abc import Iterable, Sequence


def plain_table(columns: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]]) -> str:
    """`columns`: (header, right-aligned) each; every row has one cell per column."""
    lines = [[header for header, _ in columns], *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    out = []
    for line in lines:
        cells = [cell.rjust(w) if right else cell.ljust(w) for cell, w, (_, right) in zip(line, widths, columns)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"
