"""The controller's cache of the models' measured starts (controller/start_times.py)."""

from isense_slurm.controller.start_times import REFRESH_SECONDS, WINDOW_SECONDS, StartTimes
from isense_slurm.planner import ModelStart


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def test_starts_are_read_for_the_past_week_and_at_most_once_a_minute():
    clock, reads = Clock(), []

    def read(since: float) -> dict[str, tuple[float, int]]:
        reads.append(since)
        return {"tiny": (36.5, 4 + len(reads)), "big": (300.0, 2)}

    starts = StartTimes(read, clock)
    assert starts.current() == (ModelStart("big", 300.0, 2), ModelStart("tiny", 36.5, 5))
    assert reads == [clock.now - WINDOW_SECONDS]
    clock.now += REFRESH_SECONDS - 1
    assert starts.current()[1].count == 5  # cached
    clock.now += 1
    assert starts.current()[1].count == 6  # read again
    assert len(reads) == 2


def test_a_failed_read_keeps_the_last_figures():
    clock, answers = Clock(), [{"tiny": (36.5, 4)}, OSError("database is locked")]

    def read(_since: float) -> dict[str, tuple[float, int]]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    starts = StartTimes(read, clock)
    first = starts.current()
    clock.now += REFRESH_SECONDS
    assert starts.current() == first == (ModelStart("tiny", 36.5, 4),)


def test_without_a_ledger_no_model_is_measured():
    assert StartTimes(None).current() == ()
