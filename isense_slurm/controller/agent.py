"""The controller's loop: observe Slurm, make a plan, act; on a schedule and on demand.

APScheduler 3.x (BackgroundScheduler: ticks run Slurm commands, so they stay off the
gateway's event loop) fires a tick every [slurm] tick_seconds (max_instances=1,
coalesce). wake() runs one at once (the epilog's gpus_free). A lock keeps ticks one at
a time; a wake that arrives during a tick makes that tick run again, so no event is
lost and no two ticks ever act on the same picture (no duplicate submits). When a
node's dwell ends between ticks, the next tick is moved to that moment.

After a restart the picture is rebuilt: workers come from squeue (the service
account's isense-* jobs in the lend partition), and the ledger is reconciled with
them (workers it lacks are recorded as lent; workers it holds open that Slurm has let
go are closed with the reason Slurm gives).

No crash loops: the worker watch (controller/failures.py) counts the workers that end
before they serve; the planner holds their (node, model) back with an exponential
back-off. One log line when a hold starts (with the failed job's last output line),
one when it grows, one when it ends; GET /internal/controller lists the holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from isense_slurm.contracts.states import WorkerStage
from isense_slurm.contracts.workers import model_of
from isense_slurm.controller.act import Actor, Outcome
from isense_slurm.controller.failures import WorkerWatch
from isense_slurm.controller.memory import Memory
from isense_slurm.controller.observe import Observation, Observer, Scope
from isense_slurm.controller.start_times import StartReader, StartTimes
from isense_slurm.errors import SlurmError
from isense_slurm.meter.rows import WorkerInfo
from isense_slurm.planner import Cancel, Demand, Hold, Plan, Policy, Submit, make_plan
from isense_slurm.reclaim.book import ReclaimBook
from isense_slurm.reclaim.make_way import WayMaker
from isense_slurm.reclaim.recorder import end_reason_of_finished
from isense_slurm.slurm import Job

if TYPE_CHECKING:
    from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("isense.controller")

TICK_JOB = "isense-tick"
WAKE_GAP_SECONDS = 0.5  # the least time between the starts of two ticks a wake asks for
RECONCILE_SECONDS = 60.0
ENDED_GRACE_SECONDS = 30.0  # let the epilog's worker_end (better reason) arrive first


class Agent:
    def __init__(
        self,
        cfg,
        slurm,
        *,
        ledger=None,
        demand: Callable[[], Iterable[Demand]] | None = None,
        dry_run: bool = False,
        report: Callable[[Plan], None] | None = None,
        plugin: bool | None = None,
        served: Callable[[str], bool | None] | None = None,
        start_times: StartReader | None = None,
    ):
        self.cfg = cfg
        self.slurm = slurm
        self.ledger = ledger
        self.dry_run = dry_run
        self.report = report
        self.policy = Policy.from_config(cfg)
        self.memory = Memory()
        self.observer = Observer(Scope.from_config(cfg), slurm, self.memory, demand)
        self.actor = Actor(cfg, slurm, self.memory, plugin=plugin, on_lent=self._record_lent)
        # Reclaims in flight: make way writes the submits it catches and the workers it
        # stops; the event recorder (isense serve) and the worker watch read them.
        self.reclaims = ReclaimBook(Scope.from_config(cfg))
        # Runs on the job_submit hook's wake, beside the ticks (reclaim/make_way.py).
        self.way = WayMaker(Scope.from_config(cfg), slurm, self.memory, dry_run=dry_run, book=self.reclaims)
        # Whether a worker ever served: the ledger (the gateway records registrations).
        if served is None and ledger is not None:
            served = self._served_in_ledger
        self.watch = WorkerWatch(cfg.slurm.job_dir, served=served, stopped=self.reclaims.made_way)
        # The models' measured starts (the break-even rule): the ledger's, unless given.
        if start_times is None and ledger is not None:
            start_times = ledger.start_times
        self.starts = StartTimes(start_times)
        self._holds: dict[tuple[str, str], Hold] = {}
        self.tick_seconds = float(cfg.slurm.tick_seconds)
        self.scheduler: BackgroundScheduler | None = None
        self.ticks = 0
        self.last_plan: Plan | None = None
        self.last_tick_at: float | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._again = threading.Event()
        self._last_start = float("-inf")  # monotonic start of the last tick
        self._reconciled_at: float | None = None
        self._summary = ""

    # --- schedule ---------------------------------------------------------------------

    def start(self) -> None:
        # APScheduler loads when the daemon starts: `serve --dry-run` builds an Agent too.
        from apscheduler.schedulers.background import BackgroundScheduler

        self.scheduler = scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.tick_seconds,
            id=TICK_JOB,
            name="tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()

    def stop(self) -> None:
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=True)

    def wake(self) -> None:
        """Tick now (thread-safe); if a tick is running, it runs once more. Early ticks
        start at least WAKE_GAP_SECONDS apart: a storm of epilog events (many jobs ending
        at once) must not keep the controller observing back to back, holding the GIL
        that the gateway's event loop shares."""
        self._again.set()
        delay = max(0.0, self._last_start + WAKE_GAP_SECONDS - time.monotonic())
        self._run_at(datetime.now(UTC) + timedelta(seconds=delay))

    def make_way(self, wake_time: float | None = None) -> None:
        """A job was submitted: stop now the workers it would preempt (thread-safe)."""
        self.way.run(wake_time)

    def add_cron(self, expr: str, func: Callable[[], object], name: str) -> None:
        """Run `func` on a crontab expression (local time), e.g. exports; the hook point for
        periodic jobs of other rooms. Call after start()."""
        from apscheduler.triggers.cron import CronTrigger
        from tzlocal import get_localzone

        assert self.scheduler is not None, "add_cron() before start()"
        self.scheduler.add_job(
            func,
            CronTrigger.from_crontab(expr, timezone=get_localzone()),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            replace_existing=True,
        )

    def _run_at(self, when: datetime) -> None:
        if self.scheduler is None or not self.scheduler.running:
            return
        try:
            job = self.scheduler.get_job(TICK_JOB)
            if job is not None and (job.next_run_time is None or when < job.next_run_time):
                job.modify(next_run_time=when)
        except Exception as err:  # noqa: BLE001 - a lost early tick costs one interval
            log.debug("early tick not scheduled: %s", err)

    # --- one tick ---------------------------------------------------------------------

    def tick(self) -> Plan | None:
        """Observe, plan, act. Never two at once; returns the last plan made (None if busy)."""
        if not self._lock.acquire(blocking=False):
            self._again.set()
            return None
        try:
            plan = None
            while True:
                self._again.clear()
                self._last_start = time.monotonic()
                plan = self._tick_once() or plan
                if not self._again.is_set():
                    return plan
                time.sleep(max(0.0, self._last_start + WAKE_GAP_SECONDS - time.monotonic()))
        finally:
            self._lock.release()

    def _tick_once(self) -> Plan | None:
        now = datetime.now()
        self.ticks += 1
        self.last_tick_at = time.time()
        try:
            observation = self.observer.observe(now)
        except SlurmError as err:
            if str(err) != self.last_error:
                log.error("tick skipped: %s", err)
            self.last_error = str(err)
            return None
        if self.last_error:
            log.info("Slurm answers again")
        self.last_error = None
        self.way.note_nodes(self.observer.last_nodes)
        self.watch.update(observation, self.memory, now)
        snapshot = replace(observation.snapshot, failures=self.watch.records(), starts=self.starts.current())
        plan = make_plan(snapshot, self.policy)
        self.last_plan = plan
        if self.report is not None:
            self.report(plan)
        if self.dry_run:
            return plan
        self._reconcile(observation)
        outcomes = self.actor.apply(plan, now) if plan.actions else []
        for outcome in outcomes:
            if outcome.error is None and isinstance(outcome.action, Submit):
                assert outcome.job_id is not None  # a submit that took has its job id
                self.watch.follow(outcome.job_id, outcome.action.node, outcome.action.model)
            elif outcome.error is None and isinstance(outcome.action, Cancel):
                self.watch.note_stopped([outcome.action.job_id])
        self._log_holds(plan, now)
        self._log(plan, outcomes)
        self._schedule_dwell_end(observation, now)
        return plan

    def _log(self, plan: Plan, outcomes: list[Outcome]) -> None:
        if plan.explanations and plan.explanations[0] != self._summary:
            self._summary = plan.explanations[0]
            log.info("%s", self._summary)
        if not outcomes:
            return
        for line in plan.explanations[1:]:
            if line.startswith(("lend ", "cancel ")):
                log.info("%s", line)
        for outcome in outcomes:
            (log.info if outcome.error is None else log.error)("%s", outcome.line())

    def _log_holds(self, plan: Plan, now: datetime) -> None:
        """One line when a (node, model) starts being held back, one when its back-off
        grows (a failed try, at most one per back-off), one when it is released."""
        holds = {(h.node, h.model): h for h in plan.holds}
        for key, h in holds.items():
            before = self._holds.get(key)
            if before is None:
                log.warning("holding back %s on %s: %s", h.model, h.node, h.text(now))
            elif h.failures > before.failures:
                log.info("still holding back %s on %s: %s", h.model, h.node, h.text(now))
        for key in self._holds.keys() - holds.keys():
            log.info("released %s on %s: a worker served", key[1], key[0])
        self._holds = holds

    def _served_in_ledger(self, job_id: str) -> bool | None:
        run = self.ledger.worker(job_id)
        return run is not None and run.serving_at is not None

    def _schedule_dwell_end(self, observation: Observation, now: datetime) -> None:
        dwell = timedelta(seconds=self.policy.min_idle_seconds)
        due = [
            n.idle_since + dwell
            for n in observation.snapshot.nodes
            if n.idle_since is not None and n.lendable and n.idle_since + dwell > now
        ]
        if due:
            # Naive local -> aware: astimezone() reads a naive time as local.
            self._run_at(min(due).astimezone(UTC) + timedelta(milliseconds=50))

    # --- ledger -----------------------------------------------------------------------

    def _record_lent(self, job_id: str, submit: Submit) -> None:
        if self.ledger is not None:
            self.ledger.worker_event(
                job_id, state=WorkerStage.LENT, node=submit.node, gpus=submit.gpus, model=submit.model
            )

    def _date_run(self, job_id: str, job: Job, run: WorkerInfo | None) -> None:
        """A running worker job the ledger has no open run of is adopted, from Slurm's
        start; a run first heard of after it started (a requeued worker registering)
        is dated back to that start. A pending job holds no GPUs: nothing is lent yet."""
        assert self.ledger is not None
        if not job.is_active:
            return
        started = job.start_time or job.submit_time
        at = started.timestamp() if started else None
        if run is not None and (at is None or run.started_at <= at + 1.0):
            return
        self.ledger.worker_event(
            job_id,
            state=WorkerStage.LENT,
            node=job.nodes[0] if job.nodes else None,
            gpus=job.gpus,
            model=model_of(job.name),
            at=at,
        )
        if run is None:
            log.info("adopted worker %s (%s) from squeue", job_id, job.name)
        else:
            log.info("worker %s: run %d dated back to its Slurm start", job_id, run.run)

    def _reconcile(self, observation: Observation) -> None:
        """Ledger <-> Slurm: at start, then every RECONCILE_SECONDS."""
        if self.ledger is None:
            return
        now = time.monotonic()
        if self._reconciled_at is not None and now - self._reconciled_at < RECONCILE_SECONDS:
            return
        self._reconciled_at = now
        try:
            open_runs = {w.job_id: w for w in self.ledger.workers(active_only=True)}
            for job_id, job in observation.workers.items():
                self._date_run(job_id, job, open_runs.get(job_id))
            wall = time.time()
            for job_id, run in open_runs.items():
                if not job_id.isdigit():
                    continue  # a worker run outside Slurm (development)
                seen = observation.jobs.get(job_id)
                if seen is not None and (seen.is_pending or seen.is_active or "COMPLETING" in seen.states):
                    continue
                ended = seen.end_time.timestamp() if seen is not None and seen.end_time else None
                if ended is not None and wall - ended < ENDED_GRACE_SECONDS:
                    continue
                if seen is None and wall - run.updated_at < ENDED_GRACE_SECONDS:
                    continue
                reason = end_reason_of_finished(seen)
                self.ledger.worker_event(job_id, state=WorkerStage.ENDED, reason=reason, at=ended)
                log.info("closed worker %s in the ledger: %s", job_id, reason)
        except Exception as err:  # noqa: BLE001 - bookkeeping must not stop lending
            log.error("ledger reconcile failed: %s", err)

    # --- view ---------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            "ticks": self.ticks,
            "last_tick_at": self.last_tick_at,
            "last_error": self.last_error,
            "dry_run": self.dry_run,
            "make_way": {
                "passes": self.way.passes,
                "workers_stopped": self.way.released,
                "retries_for_unlisted_submits": self.way.retries,
            },
            "plan": list(self.last_plan.explanations) if self.last_plan else [],
            "held_back": self.held_back(),
        }

    def held_back(self) -> list[dict]:
        """The (node, model) pairs held back after the last plan, for reports and doctor."""
        if self.last_plan is None:
            return []
        now = datetime.now()
        return [
            {
                "node": h.node,
                "model": h.model,
                "failures": h.failures,
                "state": h.state(now),
                "backoff_seconds": h.backoff_seconds,
                "until": h.until.timestamp(),
                "trying": h.trying,
                "last_job_id": h.last_job_id,
                "last_reason": h.last_reason,
                "text": h.text(now),
            }
            for h in self.last_plan.holds
        ]
