"""Small helpers for stable ordering and short human wording in explanations."""

from __future__ import annotations

import re
from datetime import datetime

_DIGITS = re.compile(r"(\d+)")

# natural_key's result: (0, number, "") for a run of digits, (1, 0, text) for the rest.
NaturalKey = tuple[tuple[int, int, str], ...]


def natural_key(text: str) -> NaturalKey:
    """Sort key that puts n2 before n10 and job 99 before job 100."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in _DIGITS.split(text))


def seconds(value: float) -> str:
    """1.25 -> "1.2", 2.0 -> "2": seconds as people read them."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def gpus(count: int) -> str:
    return f"{count} GPU" if count == 1 else f"{count} GPUs"


def clock(when: datetime, now: datetime) -> str:
    """Wall time, with the date only when it is not today."""
    if when.date() == now.date():
        return when.strftime("%H:%M")
    return when.strftime("%Y-%m-%d %H:%M")


def minutes_between(now: datetime, when: datetime, margin_seconds: float = 0.0) -> int:
    """Whole minutes from `now` until `margin_seconds` before `when` (never rounded up)."""
    return int(((when - now).total_seconds() - margin_seconds) // 60)
