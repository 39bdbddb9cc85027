"""Availability windows: parsing and membership on local wall time, midnight included."""

from datetime import UTC, datetime, timedelta

import pytest

from isense_slurm.availability import (
    Window,
    WindowError,
    available_at,
    available_until,
    parse_window,
)

# 2024-01-01 is a Monday: MON..SUN below are that week's dates.
MON, TUE, WED, THU, FRI, SAT, SUN = (datetime(2024, 1, d) for d in range(1, 8))
NEXT_MON = datetime(2024, 1, 8)


def at(day: datetime, hhmm: str) -> datetime:
    hour, minute = map(int, hhmm.split(":"))
    return day.replace(hour=hour, minute=minute)


def test_weekdays_night_window_crosses_midnight_and_belongs_to_its_start_day():
    night = parse_window("weekdays 20:00-08:00")
    assert night.crosses_midnight
    assert night.contains(at(MON, "20:00"))
    assert night.contains(at(MON, "23:59"))
    assert night.contains(at(TUE, "00:00"))
    assert night.contains(at(TUE, "07:59"))
    assert not night.contains(at(TUE, "08:00"))  # end is exclusive
    assert not night.contains(at(TUE, "19:59"))
    # Friday night runs into Saturday morning ...
    assert night.contains(at(FRI, "22:00"))
    assert night.contains(at(SAT, "07:30"))
    assert not night.contains(at(SAT, "20:30"))
    # ... but Sunday night is not a weekday's night, so Monday morning is out.
    assert not night.contains(at(SUN, "21:00"))
    assert not night.contains(at(MON, "03:00"))


def test_daytime_window_does_not_spill_over():
    day = parse_window("daily 08:30-17:00")
    assert not day.crosses_midnight
    assert day.contains(at(WED, "08:30"))
    assert day.contains(at(SUN, "16:59"))
    assert not day.contains(at(WED, "08:29"))
    assert not day.contains(at(WED, "17:00"))
    assert day.contains(datetime(2024, 1, 3, 16, 59, 59, 999999))


def test_whole_days_with_24_00_end():
    weekend = parse_window("weekends 00:00-24:00")
    assert weekend.contains(at(SAT, "00:00"))
    assert weekend.contains(at(SUN, "23:59"))
    assert not weekend.contains(at(FRI, "23:59"))
    assert not weekend.contains(at(NEXT_MON, "00:00"))


def test_day_lists_and_ranges():
    mwf = parse_window("mon,wed,fri 12:00-13:00")
    assert [mwf.contains(at(d, "12:30")) for d in (MON, TUE, WED, THU, FRI, SAT, SUN)] == [
        True,
        False,
        True,
        False,
        True,
        False,
        False,
    ]
    assert parse_window("mon-thu 09:00-10:00").days == frozenset({0, 1, 2, 3})
    assert parse_window("fri-mon 09:00-10:00").days == frozenset({4, 5, 6, 0})
    assert parse_window("Sat,SUN 09:00-10:00").days == frozenset({5, 6})


def test_day_list_crossing_midnight_covers_the_next_morning_only():
    sunday_night = parse_window("sun 22:00-06:00")
    assert sunday_night.contains(at(SUN, "23:00"))
    assert sunday_night.contains(at(NEXT_MON, "05:59"))
    assert sunday_night.contains(at(MON, "05:59"))  # the Monday after last week's Sunday
    assert not sunday_night.contains(at(TUE, "05:59"))
    assert not sunday_night.contains(at(SAT, "23:00"))


def test_end_at_midnight_is_the_same_as_24_00():
    assert parse_window("daily 20:00-00:00") == parse_window("daily 20:00-24:00")


@pytest.mark.parametrize(
    "text", ["weekdays 20:00-08:00", "weekends 00:00-24:00", "daily 08:30-17:00", "mon,wed,fri 12:00-13:00"]
)
def test_canonical_text_parses_back_to_the_same_window(text):
    window = parse_window(text)
    assert window.text == text
    assert parse_window(window.text) == window


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("weekdays", "expected"),
        ("weekdays 20:00-08:00 extra", "expected"),
        ("weekday 20:00-08:00", 'did you mean "weekdays"'),
        ("mon,wdn 20:00-08:00", 'did you mean "wed"'),
        ("weekdays 8pm-8am", "bad time range"),
        ("weekdays 24:00-08:00", "bad start time"),
        ("weekdays 20:00-24:30", "bad end time"),
        ("weekdays 20:60-08:00", "bad start time"),
        ("weekdays 25:00-08:00", "bad start time"),
        ("weekdays 20:00-20:00", "start equals end"),
        ("weekdays 20:00", "bad time range"),
    ],
)
def test_bad_windows_say_what_is_wrong(text, complaint):
    with pytest.raises(WindowError, match=complaint):
        parse_window(text)


def test_no_windows_means_always():
    assert available_at([], at(TUE, "12:00"))
    assert available_until([], at(TUE, "12:00"), timedelta(hours=3)) == at(TUE, "15:00")


def test_available_until_follows_touching_windows():
    windows = [parse_window("weekdays 20:00-08:00"), parse_window("weekends 00:00-24:00")]
    week = timedelta(days=7)
    # Friday night joins the weekend, which ends at Monday 00:00 (Sunday night is out).
    assert available_until(windows, at(FRI, "21:00"), week) == NEXT_MON
    assert available_until(windows, at(TUE, "07:00"), week) == at(TUE, "08:00")
    assert available_until(windows, at(TUE, "07:00"), timedelta(minutes=30)) == at(TUE, "07:30")
    assert available_until(windows, at(TUE, "12:00"), week) is None
    assert not available_at(windows, at(TUE, "12:00"))
    assert available_at(windows, at(SAT, "12:00"))


def test_end_of_gives_the_close_of_the_current_occurrence():
    night = parse_window("weekdays 20:00-08:00")
    assert night.end_of(at(MON, "21:00")) == at(TUE, "08:00")
    assert night.end_of(at(TUE, "01:00")) == at(TUE, "08:00")
    assert night.end_of(at(TUE, "12:00")) is None


def test_window_uses_the_wall_time_it_is_given():
    from datetime import timezone

    window = Window(days=frozenset({0}), start=60, end=120)
    assert window.contains(datetime(2024, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=9))))
    assert not window.contains(datetime(2024, 1, 1, 2, 30, tzinfo=UTC))
