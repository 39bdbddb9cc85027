"""The state of reclaims in flight, in one place: from a training job's submit to its start.

One reclaim goes: the job is submitted (make way's wake catches the moment, to the
millisecond) -> make way stops the workers it would preempt (SIGTERM) -> their epilogs
report worker_end -> the job's prolog reports job_start -> a Reclaim record with the
submit, SIGTERM, GPUs-free and start times goes to the ledger.

ReclaimBook keeps what each of those steps learns, for the later ones: the submit
moments (WayMaker), the workers stopped to make way (the recorder's end reason, the
worker watch), Slurm's submit seconds (asked once per job) and the hook events not yet
paired (the assembler). Called from the make-way thread and the recorder's thread: each
map is written by one of them and read by the other (single dict operations).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from isense_slurm.contracts.workers import WorkerRule
from isense_slurm.reclaim.assembler import Reclaim, ReclaimAssembler

SUBMIT_SLACK_SECONDS = 0.05  # the wake may be written a hair before Slurm stamps the job
REMEMBER_SECONDS = 3600.0  # how long a stopped worker is known as "made way" (its epilog comes in seconds)
MAX_JOBS = 10_000  # submit times kept (oldest dropped first)


class ReclaimBook:
    def __init__(self, rule: WorkerRule | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        rule = rule or WorkerRule(None, None)
        self.assembler = ReclaimAssembler(lend_partition=rule.lend_partition, service_account=rule.service_account)
        self._submitted: dict[str, float] = {}  # pending job id -> its submit, to the ms (wake time)
        self._stopped: dict[str, float] = {}  # worker job id -> when make way stopped it (clock)
        self._slurm_submit: dict[str, float | None] = {}  # job id -> Slurm's submit second

    # --- submit (make way's wake) --------------------------------------------------------

    def note_submit(self, job_id: str, at: float) -> None:
        """Job `job_id` was submitted at unix time `at` (the first word wins)."""
        self._submitted.setdefault(job_id, at)
        if len(self._submitted) > MAX_JOBS:
            for old in list(self._submitted)[:1000]:
                self._submitted.pop(old, None)

    def note_wake(self, jobs: Iterable, wake_time: float | None) -> None:
        """The wake file's mtime is the submit RPC's moment: give it to the new pending
        jobs whose Slurm submit second it falls in."""
        if wake_time is None:
            return
        for j in jobs:
            job_id = str(j.job_id)
            if not j.is_pending or j.submit_time is None or job_id in self._submitted:
                continue
            second = j.submit_time.timestamp()
            if second - SUBMIT_SLACK_SECONDS <= wake_time < second + 1:
                self.note_submit(job_id, wake_time)

    def submitted_at(self, job_id: str) -> float | None:
        """A job's submit time to the millisecond, where a wake caught it.
        Slurm keeps whole seconds only: up to a second off in a sub-second reclaim."""
        return self._submitted.get(job_id)

    def submit_time(self, job_id: str, slurm_submit: Callable[[str], float | None]) -> float | None:
        """The best submit time known: the wake's, else Slurm's second (asked once, via
        `slurm_submit`, again while unknown)."""
        precise = self.submitted_at(job_id)
        if precise is not None:
            return precise
        if self._slurm_submit.get(job_id) is None:
            self._slurm_submit[job_id] = slurm_submit(job_id)
            if len(self._slurm_submit) > MAX_JOBS:
                self._slurm_submit.pop(next(iter(self._slurm_submit)))
        return self._slurm_submit[job_id]

    # --- workers stopped to make way ----------------------------------------------------

    def note_stopped(self, worker_job_id: str) -> None:
        self._stopped[worker_job_id] = self.clock()

    def made_way(self, worker_job_id: str) -> bool:
        """Whether make way stopped worker `worker_job_id` (within REMEMBER_SECONDS)."""
        horizon = self.clock() - REMEMBER_SECONDS
        for old in [j for j, at in list(self._stopped.items()) if at < horizon]:
            self._stopped.pop(old, None)
        return worker_job_id in self._stopped

    # --- hook events -> reclaim records -------------------------------------------------

    def add_event(self, event: dict) -> list[Reclaim]:
        """A validated hook event; returns the reclaim records it makes or changes."""
        return self.assembler.add(event)
