"""Calendar periods in UTC: days, ISO weeks (Monday start) and months.

Reports and exports use the same half-open ranges [start, end) in unix seconds, so a
day's totals in `isense earnings` and in its export come from the same predicate
(`ts >= start AND ts < end`) and reconcile exactly.
"""

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from isense_slurm.errors import UsageError

BY_CHOICES = ("day", "week", "month")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_WEEK = re.compile(r"(\d{4})-W(\d{2})")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class Period:
    """A labelled UTC range [start, end)."""

    label: str  # "2025-01-05", "2025-W01" or "2025-01"
    start: datetime
    end: datetime

    @property
    def start_ts(self) -> float:
        return self.start.timestamp()

    @property
    def end_ts(self) -> float:
        return self.end.timestamp()


def utc_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def iso_z(moment: datetime) -> str:
    """'2025-01-05T00:00:00Z'."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_date(text: str, flag: str) -> date:
    """YYYY-MM-DD, strictly; UsageError naming the flag otherwise."""
    match = _DATE.fullmatch(text.strip())
    try:
        if match:
            return date(*map(int, match.groups()))
    except ValueError as err:
        raise UsageError(f"{flag} {text!r}: {err}") from None
    raise UsageError(f"{flag} {text!r}: expected a date as YYYY-MM-DD (UTC)")


def period_of(by: str, day: date) -> Period:
    """The day, ISO week or month that holds `day`."""
    if by == "day":
        return Period(day.isoformat(), utc_midnight(day), utc_midnight(day + timedelta(days=1)))
    if by == "week":
        monday = day - timedelta(days=day.weekday())
        year, week, _ = monday.isocalendar()
        return Period(f"{year}-W{week:02d}", utc_midnight(monday), utc_midnight(monday + timedelta(days=7)))
    if by == "month":
        first = day.replace(day=1)
        following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        return Period(f"{first:%Y-%m}", utc_midnight(first), utc_midnight(following))
    raise UsageError(f"--by {by!r}: use one of {', '.join(BY_CHOICES)}")


def buckets(by: str, since: datetime, until: datetime) -> list[Period]:
    """The periods of kind `by` that overlap [since, until), each clipped to that range."""
    if by not in BY_CHOICES:
        raise UsageError(f"--by {by!r}: use one of {', '.join(BY_CHOICES)}")
    result = []
    day = since.astimezone(UTC).date()
    while True:
        period = period_of(by, day)
        if period.start >= until:
            break
        result.append(Period(period.label, max(period.start, since), min(period.end, until)))
        day = period.end.date()
    return result


def parse_export_period(text: str, now: datetime) -> Period:
    """'yesterday' (UTC), YYYY-MM-DD, YYYY-Www (ISO week) or YYYY-MM."""
    value = text.strip()
    if value == "yesterday":
        return period_of("day", now.astimezone(UTC).date() - timedelta(days=1))
    try:
        if match := _DATE.fullmatch(value):
            return period_of("day", date(*map(int, match.groups())))
        if match := _WEEK.fullmatch(value):
            year, week = map(int, match.groups())
            return period_of("week", date.fromisocalendar(year, week, 1))
        if match := _MONTH.fullmatch(value):
            year, month = map(int, match.groups())
            return period_of("month", date(year, month, 1))
    except ValueError as err:
        raise UsageError(f"--period {text!r}: {err}") from None
    raise UsageError(f"--period {text!r}: use yesterday, YYYY-MM-DD, YYYY-Www (ISO week) or YYYY-MM (UTC)")


_MOMENT = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2}))?Z?")


def parse_range(period: str | None, since: str | None, until: str | None, now: float) -> tuple[float, float]:
    """[start, end) in unix seconds from --period, or --since/--until (default: today, UTC).

    --period: today, yesterday, YYYY-MM-DD, YYYY-Www, YYYY-MM or DAY..DAY (both days
    included). --since/--until: a day (--until's day included) or a moment
    YYYY-MM-DDTHH:MM[:SS] in UTC; a missing --since is today's start, --until now.
    """
    moment = datetime.fromtimestamp(now, UTC)
    if period is not None and (since or until):
        raise UsageError("--period and --since/--until: pick one")
    if period is not None:
        value = period.strip()
        if value == "today":
            found = period_of("day", moment.date())
        elif ".." in value:
            first, _, last = value.partition("..")
            found = Period(
                value,
                utc_midnight(parse_date(first, "--period")),
                utc_midnight(parse_date(last, "--period") + timedelta(days=1)),
            )
        else:
            found = parse_export_period(value, moment)
        start, end = found.start_ts, found.end_ts
    else:
        start = _moment(since, "--since", False) if since else period_of("day", moment.date()).start_ts
        end = _moment(until, "--until", True) if until else now
    if start >= end:
        raise UsageError(f"the range is empty: it starts at or after its end ({period or f'{since}..{until}'})")
    if start >= now:
        raise UsageError(f"the range starts in the future ({period or since}): nothing to compare yet")
    return start, end


def _moment(text: str, flag: str, day_included: bool) -> float:
    value = text.strip()
    if match := _MOMENT.fullmatch(value):
        try:
            year, month, day, hour, minute, second = (int(p or 0) for p in match.groups())
            return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
        except ValueError as err:
            raise UsageError(f"{flag} {text!r}: {err}") from None
    if _DATE.fullmatch(value):
        first = parse_date(value, flag)
        return utc_midnight(first + timedelta(days=1) if day_included else first).timestamp()
    raise UsageError(f"{flag} {text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS] (UTC)")
