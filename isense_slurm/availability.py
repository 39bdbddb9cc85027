"""Availability windows: when idle GPUs may be lent, in the site's local wall time.

Forms: "daily HH:MM-HH:MM", "weekdays ...", "weekends ...", "mon,wed,fri ..." (ranges
such as "mon-thu" or "fri-mon" too). "24:00" is allowed as an end. A window whose end is before its
start crosses midnight and belongs to the day it starts on: "fri 20:00-08:00" covers
Friday 20:00 to Saturday 08:00.

Pure: a Window never reads the clock; callers pass the time they mean.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_SETS = {
    "daily": frozenset(range(7)),
    "weekdays": frozenset(range(5)),
    "weekends": frozenset({5, 6}),
}
MINUTES_PER_DAY = 24 * 60
_SPAN_RE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
FORMS_HINT = 'expected "<days> HH:MM-HH:MM" with days daily, weekdays, weekends or e.g. mon,wed,fri'


class WindowError(ValueError):
    """A window text that cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True)
class Window:
    """Days on which the window opens, and its start/end in minutes after midnight."""

    days: frozenset[int]  # datetime.weekday() numbers: 0 = Monday
    start: int  # 0 .. 1439
    end: int  # 1 .. 1440; end < start means it runs past midnight into the next day

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    @property
    def text(self) -> str:
        """Canonical form, parseable again."""
        return f"{_days_text(self.days)} {_hhmm(self.start)}-{_hhmm(self.end)}"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Window({self.text!r})"

    def contains(self, dt: datetime) -> bool:
        """Whether the wall time `dt` lies in the window (start inclusive, end exclusive)."""
        minute = dt.hour * 60 + dt.minute
        day = dt.weekday()
        if not self.crosses_midnight:
            return day in self.days and self.start <= minute < self.end
        opened_today = day in self.days and minute >= self.start
        opened_yesterday = (day - 1) % 7 in self.days and minute < self.end
        return opened_today or opened_yesterday

    def end_of(self, dt: datetime) -> datetime | None:
        """When the occurrence of this window that contains `dt` closes; None if outside."""
        if not self.contains(dt):
            return None
        midnight = dt.replace(hour=0, minute=0, second=0, microsecond=0)
        minute = dt.hour * 60 + dt.minute
        if self.crosses_midnight and minute >= self.start:
            return midnight + timedelta(days=1, minutes=self.end)
        return midnight + timedelta(minutes=self.end)


def available_at(windows: list[Window], dt: datetime) -> bool:
    """Lending allowed at `dt`: no windows means always."""
    return not windows or any(w.contains(dt) for w in windows)


def available_until(windows: list[Window], dt: datetime, horizon: timedelta) -> datetime | None:
    """How long lending stays allowed from `dt`, following windows that touch or overlap.

    None when lending is not allowed at `dt`; at most `dt + horizon`.
    """
    limit = dt + horizon
    if not windows:
        return limit
    moment = dt
    while moment < limit:
        ends = [end for w in windows if (end := w.end_of(moment)) is not None]
        if not ends:
            return None if moment == dt else moment
        moment = max(ends)  # each end lies after `moment`, so this advances
    return limit


def parse_window(text: str) -> Window:
    """Parse one window; raises WindowError naming what is wrong."""
    parts = text.split()
    if len(parts) != 2:
        raise WindowError(FORMS_HINT)
    days = _parse_days(parts[0].lower())
    start, end = _parse_span(parts[1])
    return Window(days=days, start=start, end=end)


def _parse_days(token: str) -> frozenset[int]:
    if token in DAY_SETS:
        return DAY_SETS[token]
    days: set[int] = set()
    for item in token.split(","):
        first, sep, last = item.partition("-")
        lo = _day_number(first, token)
        hi = _day_number(last, token) if sep else lo
        days.update(range(lo, hi + 1) if lo <= hi else [*range(lo, 7), *range(0, hi + 1)])  # "fri-mon" wraps
    return frozenset(days)


def _day_number(name: str, token: str) -> int:
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    known = [*DAY_SETS, *DAY_NAMES]
    close = difflib.get_close_matches(name or token, known, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else f" ({FORMS_HINT})"
    raise WindowError(f'unknown day "{name or token}"{hint}')


def _parse_span(span: str) -> tuple[int, int]:
    match = _SPAN_RE.match(span)
    if not match:
        raise WindowError(f'bad time range "{span}": expected HH:MM-HH:MM such as 20:00-08:00')
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59:
        raise WindowError(f'bad start time "{match.group(1)}:{match.group(2)}": use 00:00-23:59')
    if (eh, em) != (24, 0) and (eh > 23 or em > 59):
        raise WindowError(f'bad end time "{match.group(3)}:{match.group(4)}": use 00:00-24:00')
    start, end = sh * 60 + sm, eh * 60 + em
    if start == end:
        raise WindowError(f'empty time range "{span}": start equals end (a whole day is 00:00-24:00)')
    if end == 0:  # "20:00-00:00" ends at midnight: the same as "20:00-24:00"
        end = MINUTES_PER_DAY
    return start, end


def _days_text(days: frozenset[int]) -> str:
    for name, members in DAY_SETS.items():
        if days == members:
            return name
    return ",".join(DAY_NAMES[d] for d in sorted(days))


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
