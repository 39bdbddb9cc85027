"""Which line of the config text a key path such as ("models", 1, "price") sits on.

tomllib reports lines only for syntax errors, so the line of a key is found by scanning
the text (best effort).
"""

from __future__ import annotations

import json
import re
from typing import Any

KeyPath = tuple  # of str and int

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]")
_ASSIGN_RE = re.compile(rf"^\s*({_DOTTED})\s*=")


def _key_parts(dotted: str) -> list[str]:
    parts = []
    for raw in re.findall(_KEY, dotted):
        if raw.startswith('"'):
            parts.append(json.loads(raw))
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return parts


class KeyLines:
    """Maps key paths such as ("models", 1, "price") to the line they sit on.

    Best effort: follows [table] and [[array]] headers and `key =` lines, skips
    multi-line strings; keys inside an inline table are looked up on its line.
    """

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.index: dict[KeyPath, int] = {}
        self._scan()

    def _scan(self) -> None:
        prefix: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        in_string = None
        for number, line in enumerate(self.lines, 1):
            if in_string:
                if line.count(in_string) % 2:
                    in_string = None
                continue
            header = _HEADER_RE.match(line)
            if header:
                prefix = self._header_path(_key_parts(header.group(2)), header.group(1) == "[[", counts)
                self.index.setdefault(prefix, number)
                continue
            assign = _ASSIGN_RE.match(line)
            if assign:
                self.index.setdefault(prefix + tuple(_key_parts(assign.group(1))), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    in_string = quote

    @staticmethod
    def _header_path(parts: list[str], is_array: bool, counts: dict[KeyPath, int]) -> KeyPath:
        path: KeyPath = ()
        for i, part in enumerate(parts):
            path += (part,)
            if is_array and i == len(parts) - 1:
                counts[path] = counts.get(path, 0) + 1
                path += (counts[path] - 1,)
            elif path in counts:
                path += (counts[path] - 1,)
        return path

    def line_of(self, path: KeyPath, value: Any = None) -> int | None:
        if path in self.index:
            return self.index[path]
        for cut in range(len(path) - 1, 0, -1):
            parent = path[:cut]
            if parent not in self.index:
                continue
            start = self.index[parent]
            child = path[cut]
            if isinstance(child, str):
                pattern = re.compile(rf"(?<![\w-]){re.escape(child)}\s*=|{re.escape(json.dumps(child))}\s*=")
                if pattern.search(self.lines[start - 1]):
                    return start
            elif isinstance(value, str):  # an array element: find its text
                needle = json.dumps(value)
                for offset, line in enumerate(self.lines[start - 1 : start + 99]):
                    if needle in line or f"'{value}'" in line:
                        return start + offset
            return start
        return None
