"""Slurm host lists: expand "n[1-3,7],gpu[01-02]" to names and compact names back.

Pure functions. Compacting ranges the last number in each name, keeps zero padding
("gpu[01-10]") and sorts names by prefix, then number, as `scontrol show hostlistsorted`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_TAIL_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on sep outside brackets/parentheses: "n[1-2],m3" -> ["n[1-2]", "m3"]."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _expand_ranges(body: str, where: str) -> list[str]:
    """ "1-3,07" -> ["1", "2", "3", "07"]; keeps the width of zero-padded bounds."""
    out: list[str] = []
    for part in body.split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad range {part!r} in host list {where!r}")
        if not sep:
            out.append(lo)
            continue
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        a, b = int(lo), int(hi)
        if b < a:
            raise ValueError(f"range {part!r} runs backwards in host list {where!r}")
        out.extend(str(n).zfill(width) for n in range(a, b + 1))
    return out


def _expand_one(expr: str, where: str) -> list[str]:
    open_at = expr.find("[")
    if open_at < 0:
        if "]" in expr:
            raise ValueError(f"unbalanced ']' in host list {where!r}")
        return [expr]
    close_at = expr.find("]", open_at)
    if close_at < 0:
        raise ValueError(f"unbalanced '[' in host list {where!r}")
    head, body, rest = expr[:open_at], expr[open_at + 1 : close_at], expr[close_at + 1 :]
    tails = _expand_one(rest, where)  # more bracket groups: cartesian product
    return [head + n + t for n in _expand_ranges(body, where) for t in tails]


def expand(hostlist: str | Iterable[str] | None) -> list[str]:
    """Expand a host list expression (or several) into node names, in order, no repeats.

    Empty, None and Slurm's "(null)" / "None" / "N/A" give [].
    """
    if hostlist is None:
        return []
    exprs = [hostlist] if isinstance(hostlist, str) else list(hostlist)
    names: list[str] = []
    seen: set[str] = set()
    for expr in exprs:
        expr = expr.strip()
        if expr in ("", "(null)", "None", "N/A"):
            continue
        for item in split_top_level(expr):
            for name in _expand_one(item, expr):
                if name not in seen:
                    seen.add(name)
                    names.append(name)
    return names


def _sort_key(name: str) -> tuple[str, str, int, str]:
    m = _TAIL_NUMBER.match(name)
    if not m:
        return (name, "", -1, "")
    return (m.group(1), m.group(3), int(m.group(2)), m.group(2))


def compact(names: Iterable[str]) -> str:
    """Compact node names into a sorted Slurm host list: ["n1","n2","n4"] -> "n[1-2,4]"."""
    groups: dict[tuple[str, str, int], list[int]] = {}
    plain: list[str] = []
    numbered: list[tuple[str, str, str]] = []
    padded: set[tuple[str, str, int]] = set()
    for name in sorted(set(names), key=_sort_key):
        m = _TAIL_NUMBER.match(name)
        if not m:
            plain.append(name)
            continue
        prefix, digits, suffix = m.groups()
        numbered.append((prefix, digits, suffix))
        if digits.startswith("0") and len(digits) > 1:
            padded.add((prefix, suffix, len(digits)))
    for prefix, digits, suffix in numbered:
        # "n09" fixes width 2, and "n10" fits it too; "n9" and "n1" have no padding.
        width = len(digits) if (prefix, suffix, len(digits)) in padded else 0
        groups.setdefault((prefix, suffix, width), []).append(int(digits))
    parts = list(plain)
    for (prefix, suffix, width), numbers in groups.items():
        ranges = _ranges(sorted(set(numbers)))
        text = ",".join(
            str(a).zfill(width) if a == b else f"{str(a).zfill(width)}-{str(b).zfill(width)}" for a, b in ranges
        )
        if len(numbers) == 1:
            parts.append(f"{prefix}{text}{suffix}")
        else:
            parts.append(f"{prefix}[{text}]{suffix}")
    return ",".join(sorted(parts, key=_group_sort_key))


def _group_sort_key(part: str) -> tuple[str, int]:
    head = part.split("[", 1)[0]
    m = _TAIL_NUMBER.match(head)
    if m and "[" not in part:
        return (m.group(1), int(m.group(2)))
    bracket = part[len(head) + 1 :]
    first = re.match(r"\d+", bracket)
    return (head, int(first.group(0)) if first else -1)


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out
