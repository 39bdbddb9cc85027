"""Typed reads from TOML tables, each error one line: `FILE:LINE: dotted.key: what is wrong`."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from isense_slurm.config.key_lines import KeyLines, KeyPath
from isense_slurm.errors import ConfigError

_REQUIRED = object()


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            out += f".{name}" if out else name
    return out


def show(value: Any) -> str:
    """A value as TOML would spell it, shortened for a one-line message."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


class Context:
    """The file being checked: its name, text (for lines) and folder (for relative paths)."""

    def __init__(self, name: str, text: str, folder: Path):
        self.name = name
        self.folder = folder
        self._lines = KeyLines(text)

    def fail(self, path: KeyPath, message: str, value: Any = None) -> ConfigError:
        line = self._lines.line_of(path, value)
        where = f"{self.name}:{line}" if line else self.name
        return ConfigError(f"{where}: {_dotted(path)}: {message}")


class Table:
    """Typed reads from one TOML table; unknown keys are refused up front."""

    def __init__(self, ctx: Context, path: KeyPath, data: dict, known: list[str]):
        self.ctx, self.path, self.data = ctx, path, data
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else f" (known: {', '.join(known)})"
                raise ctx.fail(path + (key,), f"unknown key{hint}")

    def fail(self, key: str | KeyPath, message: str, value: Any = None) -> ConfigError:
        sub = (key,) if isinstance(key, str) else key
        return self.ctx.fail(self.path + sub, message, value)

    def _get(self, key: str, default: Any) -> tuple[Any, bool]:
        if key in self.data:
            return self.data[key], True
        if default is _REQUIRED:
            raise self.fail(key, "required key is missing")
        return default, False

    def string(
        self, key: str, default: Any = _REQUIRED, *, empty_ok: bool = False, check: Callable[[str], Any] | None = None
    ) -> Any:
        value, given = self._get(key, default)
        if not given:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {show(value)} ({_kind(value)})")
        if not value.strip() and not empty_ok:
            raise self.fail(key, "must not be empty")
        if check:
            try:
                return check(value)
            except ValueError as err:
                raise self.fail(key, str(err)) from None
        return value

    def integer(
        self, key: str, default: Any = _REQUIRED, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value, given = self._get(key, default)
        if given and (isinstance(value, bool) or not isinstance(value, int)):
            hint = " (no decimal point)" if isinstance(value, float) else ""
            raise self.fail(key, f"must be an integer{hint}, got {show(value)} ({_kind(value)})")
        if given:
            self._range(key, value, minimum, maximum)
        return value

    def number(
        self,
        key: str,
        default: Any = _REQUIRED,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
        above: float | None = None,
        unit: str = "",
    ) -> float:
        value, given = self._get(key, default)
        if not given:
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {show(value)} ({_kind(value)})")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {show(value)}")
        if above is not None and not value > above:
            raise self.fail(key, f"must be greater than {above:g}, got {value:g}")
        self._range(key, value, minimum, maximum, unit)
        return float(value)

    def _range(self, key, value, minimum, maximum, unit: str = "") -> None:
        unit = f" {unit}" if unit else ""
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            raise self.fail(key, f"must be between {minimum:g} and {maximum:g}{unit}, got {value:g}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum:g}{unit}, got {value:g}")
        if maximum is not None and value > maximum:
            raise self.fail(key, f"must be at most {maximum:g}{unit}, got {value:g}")

    def string_list(self, key: str, default: Any = _REQUIRED, *, non_empty: bool = False) -> list[str]:
        value, given = self._get(key, default)
        if not given:
            return list(value)
        if not isinstance(value, list):
            raise self.fail(key, f"must be an array of strings, got {show(value)} ({_kind(value)})")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail((key, i), f"must be a string, got {show(item)} ({_kind(item)})", item)
        if non_empty and not value:
            raise self.fail(key, "must list at least one entry")
        return list(value)

    def string_table(self, key: str, default: Any = _REQUIRED) -> dict[str, str]:
        value, given = self._get(key, default)
        if not given:
            return dict(value)
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table of strings, got {show(value)} ({_kind(value)})")
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.fail((key, name), f"must be a string (quote it), got {show(item)} ({_kind(item)})")
        return dict(value)

    def table(self, key: str, known: list[str], *, required: bool = False) -> Table:
        value, _ = self._get(key, _REQUIRED if required else {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {show(value)} ({_kind(value)})")
        return Table(self.ctx, self.path + (key,), value, known)

    def folder_path(self, key: str, default: str) -> Path:
        value = Path(self.string(key, default))
        return value if value.is_absolute() else self.ctx.folder / value
