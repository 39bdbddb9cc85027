"""No crash loops: workers that end before they serve hold their (node, model) back.

The controller tells the planner how each worker job ended (WorkerEnd); note_end()
keeps, per (node, model), the failures in a row: a worker that ended before it ever
served, and that neither the controller (policy cancel, make way) nor Slurm
(preemption, time limit, scancel) stopped. A worker that served clears its pair.

From `backoff_after_failures` failures in a row on, no new worker of that model goes to
that node for a back-off of `backoff_seconds`, doubled by each further failure, at
most `backoff_max_seconds`, counted from the last failure. When it is over, ONE worker
may try (the planner submits no second one while it is pending or starting); if it
fails too, the next back-off is twice as long; if it serves, the pair is clear.

Pure: no clock (the snapshot's `now`), no I/O. Times are naive local datetimes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from isense_slurm.contracts.states import WorkerState
from isense_slurm.planner.inputs import Failures, Policy, Worker
from isense_slurm.planner.text import clock, natural_key, seconds

# Slurm's final states of a worker that something else ended: not the worker's failure.
STOPPED_STATES = frozenset({"PREEMPTED", "TIMEOUT", "DEADLINE", "CANCELLED"})
MAX_LINE = 200  # characters of the worker's last output line kept in explanations


@dataclass(frozen=True)
class WorkerEnd:
    """One worker job's end, as the controller saw it."""

    job_id: str
    node: str
    model: str
    at: datetime  # when the controller saw it end
    served: bool  # it registered with the gateway (served) at some point
    state: str = ""  # Slurm's final state ("" when Slurm no longer lists the job)
    stopped: bool = False  # the controller cancelled or signalled it (policy, make way)
    exit_code: int | None = None
    last_line: str = ""  # the last line of its output file, when read


@dataclass(frozen=True)
class Hold:
    """A (node, model) pair held back after failed workers."""

    node: str
    model: str
    failures: int
    backoff_seconds: float
    until: datetime  # no new worker of the model on the node before this
    last_job_id: str
    last_reason: str
    trying: str | None = None  # the one worker let through after the back-off, while it starts

    def waiting(self, now: datetime) -> bool:
        return now < self.until

    def blocks(self, now: datetime) -> bool:
        """No worker of the model may go to the node now (back-off, or one trying)."""
        return self.waiting(now) or self.trying is not None

    def state(self, now: datetime) -> str:
        if self.waiting(now):
            return "backing-off"
        return "trying" if self.trying is not None else "may-try"

    def text(self, now: datetime) -> str:
        """One line: what failed and what happens next."""
        if self.waiting(now):
            nxt = f"back-off {seconds(self.backoff_seconds)} s, one worker may try at {clock_s(self.until, now)}"
        elif self.trying is not None:
            nxt = f"back-off over, worker {self.trying} is trying"
        else:
            nxt = "back-off over, one worker may try now"
        return (
            f"{self.failures} {model_workers(self.failures)} ended before serving in a row"
            f" (last: job {self.last_job_id}, {self.last_reason}); {nxt}"
        )


def model_workers(count: int) -> str:
    return "worker" if count == 1 else "workers"


def clock_s(when: datetime, now: datetime) -> str:
    """Wall time to the second."""
    text = clock(when, now)
    return text + when.strftime(":%S")


def is_failure(end: WorkerEnd) -> bool:
    """Ended before serving, and nothing but the worker itself ended it."""
    return not end.served and not end.stopped and end.state not in STOPPED_STATES


def failure_line(end: WorkerEnd) -> str:
    """'FAILED, exit 1: <last output line>' (what the operator needs to start looking)."""
    text = end.state or "ended (Slurm no longer lists it)"
    if end.exit_code is not None:
        text += f", exit {end.exit_code}"
    line = " ".join(end.last_line.split())
    if len(line) > MAX_LINE:
        line = line[: MAX_LINE - 3] + "..."
    return f"{text}: {line}" if line else f"{text}, no output"


def note_end(failures: Mapping[tuple[str, str], Failures], end: WorkerEnd) -> dict[tuple[str, str], Failures]:
    """The failures after this end: a served worker clears its pair, a failure counts."""
    out = dict(failures)
    key = (end.node, end.model)
    if end.served:
        out.pop(key, None)
    elif is_failure(end):
        before = out.get(key)
        out[key] = Failures(
            end.node, end.model, (before.count if before else 0) + 1, end.at, end.job_id, failure_line(end)
        )
    return out


def note_served(failures: Mapping[tuple[str, str], Failures], node: str, model: str) -> dict[tuple[str, str], Failures]:
    """A worker of `model` on `node` serves: the pair is clear."""
    return {key: f for key, f in failures.items() if key != (node, model)}


def backoff_seconds(count: int, policy: Policy) -> float:
    """The back-off after `count` failures in a row (0 below the threshold)."""
    over = count - policy.backoff_after_failures
    if over < 0:
        return 0.0
    # min() before the power: 2**over never overflows a float at any count
    return min(policy.backoff_max_seconds, policy.backoff_seconds * 2.0 ** min(over, 64))


def holds(failures: Iterable[Failures], workers: Iterable[Worker], policy: Policy) -> list[Hold]:
    """The pairs held back, by node then model. A live worker of a held pair (pending or
    starting: it has not served, or its pair would be clear) is the one trying."""
    live: dict[tuple[str, str], list[str]] = {}
    for w in workers:
        if w.node is not None and w.state != WorkerState.DRAINING:
            live.setdefault((w.node, w.model), []).append(w.job_id)
    out = []
    for f in failures:
        if f.count < policy.backoff_after_failures:
            continue
        wait = backoff_seconds(f.count, policy)
        trying = sorted(live.get((f.node, f.model), []), key=natural_key)
        out.append(
            Hold(
                f.node,
                f.model,
                f.count,
                wait,
                f.last_at + timedelta(seconds=wait),
                f.last_job_id,
                f.last_reason,
                trying[0] if trying else None,
            )
        )
    return sorted(out, key=lambda h: (natural_key(h.node), natural_key(h.model)))


def hold_line(hold: Hold, now: datetime) -> str:
    return f"hold {hold.model} on {hold.node}: {hold.text(now)}"
