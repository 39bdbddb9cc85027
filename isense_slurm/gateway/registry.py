"""Live workers, their outstanding requests, and per-model demand counters.

Pure in-memory state owned by the gateway's event loop (no locks needed: every method
runs on the loop). Events (serving / draining / ended) go to a callback so the ledger
write happens off the hot path.
"""

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from isense_slurm.contracts.states import WorkerStage

# After a connection error or 5xx a worker is skipped this long, so a dead vLLM that has
# not missed its heartbeats yet does not cost every request a failed attempt.
QUARANTINE_SECONDS = 2.0


@dataclass(eq=False)
class LiveWorker:
    job_id: str
    node: str
    gpus: object
    model: str
    url: str  # base URL of its vLLM, without /v1
    auth_header: str  # "Bearer <vllm api key>"
    registered_at: float
    last_seen: float
    outstanding: int = 0
    served: int = 0
    failures: int = 0
    draining: bool = False
    drain_reason: str | None = None
    quarantined_until: float = 0.0
    last_picked: float = 0.0

    def as_dict(self, now: float) -> dict:
        return {
            "job_id": self.job_id,
            "node": self.node,
            "gpus": self.gpus,
            "model": self.model,
            "url": self.url,
            "state": WorkerStage.DRAINING if self.draining else WorkerStage.SERVING,
            "outstanding": self.outstanding,
            "served": self.served,
            "failures": self.failures,
            "registered_at": self.registered_at,
            "last_seen_seconds_ago": round(now - self.last_seen, 3),
        }


@dataclass
class ModelStats:
    """Demand counters per model; the scheduler reads them to decide what to lend."""

    requests: int = 0  # requests accepted for the model (auth ok, body ok)
    completed: int = 0  # answered by a worker (ok, partial or error rows)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rejected: int = 0  # 429s: no live worker
    retries: int = 0  # extra attempts after a worker failed
    in_flight: int = 0  # requests inside the gateway now (waiting on a worker)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


EventSink = Callable[[str, LiveWorker, str | None], None]


@dataclass
class Registry:
    heartbeat_timeout: float
    on_event: EventSink | None = None
    clock: Callable[[], float] = time.monotonic
    workers: dict[str, LiveWorker] = field(default_factory=dict)
    by_model: dict[str, list[LiveWorker]] = field(default_factory=dict)
    stats: dict[str, ModelStats] = field(default_factory=dict)

    def model_stats(self, model: str) -> ModelStats:
        stats = self.stats.get(model)
        if stats is None:
            stats = self.stats[model] = ModelStats()
        return stats

    # --- control protocol -------------------------------------------------------

    def register(self, job_id: str, *, node: str, gpus, model: str, url: str, auth_header: str) -> LiveWorker:
        """Add a worker, or refresh one that registers again (e.g. after a gateway restart).

        A known worker is updated in place so requests in flight on it keep counting.
        """
        now = self.clock()
        url = url.rstrip("/")
        worker = self.workers.get(job_id)
        if worker is None:
            worker = LiveWorker(job_id, node, gpus, model, url, auth_header, time.time(), now)
            self.workers[job_id] = worker
        else:
            was_routed = not worker.draining
            if worker.model != model:
                self._unroute(worker)
                was_routed = False
            worker.node, worker.gpus, worker.model, worker.url = node, gpus, model, url
            worker.auth_header, worker.last_seen = auth_header, now
            worker.draining, worker.drain_reason, worker.quarantined_until = False, None, 0.0
            if was_routed:
                return worker
        self.by_model.setdefault(model, []).append(worker)
        self._emit(WorkerStage.SERVING, worker, None)
        return worker

    def heartbeat(self, job_id: str) -> bool:
        worker = self.workers.get(job_id)
        if worker is None:
            return False
        worker.last_seen = self.clock()
        return True

    def outstanding_by_job(self) -> dict[str, int]:
        """Requests in flight per worker; safe to call from another thread (a hint only)."""
        return {job_id: w.outstanding for job_id, w in list(self.workers.items())}

    def deregister(self, job_id: str, reason: str | None) -> bool:
        """Stop routing to the worker at once; in-flight requests continue."""
        worker = self.workers.get(job_id)
        if worker is None:
            return False
        if not worker.draining:
            worker.draining = True
            worker.drain_reason = reason
            self._unroute(worker)
            self._emit(WorkerStage.DRAINING, worker, reason)
        self._end_if_idle(worker)
        return True

    def expire(self) -> list[LiveWorker]:
        """Drop workers neither heartbeating nor answering for heartbeat_timeout; returns them."""
        deadline = self.clock() - self.heartbeat_timeout
        gone = [w for w in self.workers.values() if w.last_seen < deadline]
        for worker in gone:
            self._remove(worker)
            self._emit(WorkerStage.ENDED, worker, worker.drain_reason or "heartbeat timeout")
        return gone

    # --- routing ----------------------------------------------------------------

    def pick(self, model: str, exclude: Collection[str] = ()) -> LiveWorker | None:
        """The live worker of `model` with the fewest outstanding requests.

        Ties go to the worker picked longest ago, so idle workers share the load. A
        quarantined worker is taken only when no other is left: one failed attempt
        (a stale connection, a brief stall) must not leave a stream with nowhere to
        continue, or a request with nowhere to go, while that worker may well serve.
        """
        candidates = self.by_model.get(model)
        if not candidates:
            return None
        now = self.clock()
        best: LiveWorker | None = None
        best_rank: tuple[bool, int, float] | None = None
        for worker in candidates:
            if worker.job_id in exclude:
                continue
            rank = (worker.quarantined_until > now, worker.outstanding, worker.last_picked)
            if best_rank is None or rank < best_rank:
                best, best_rank = worker, rank
        if best is not None:
            best.last_picked = now
        return best

    def has_live(self, model: str) -> bool:
        return bool(self.by_model.get(model))

    def acquire(self, worker: LiveWorker) -> None:
        worker.outstanding += 1

    def release(self, worker: LiveWorker, *, failed: bool = False) -> None:
        worker.outstanding -= 1
        if failed:
            self.quarantine(worker)
        else:
            worker.served += 1
            # An answer is better proof of life than a heartbeat: on a loaded host the
            # worker's heartbeats may come late while its vLLM serves well.
            worker.last_seen = self.clock()
        if worker.draining:
            self._end_if_idle(worker)

    def quarantine(self, worker: LiveWorker) -> None:
        worker.failures += 1
        worker.quarantined_until = self.clock() + QUARANTINE_SECONDS

    # --- views ------------------------------------------------------------------

    def snapshot(self) -> dict:
        now = self.clock()
        return {
            "workers": [w.as_dict(now) for w in self.workers.values()],
            "models": {name: s.as_dict() for name, s in self.stats.items()},
        }

    def live_count(self, model: str) -> int:
        return len(self.by_model.get(model, ()))

    # --- internals ----------------------------------------------------------------

    def _end_if_idle(self, worker: LiveWorker) -> None:
        if worker.outstanding <= 0 and self.workers.get(worker.job_id) is worker:
            del self.workers[worker.job_id]
            self._emit(WorkerStage.ENDED, worker, worker.drain_reason)

    def _unroute(self, worker: LiveWorker) -> None:
        routed = self.by_model.get(worker.model)
        if routed and worker in routed:
            routed.remove(worker)
            if not routed:
                del self.by_model[worker.model]

    def _remove(self, worker: LiveWorker) -> None:
        self._unroute(worker)
        if self.workers.get(worker.job_id) is worker:
            del self.workers[worker.job_id]

    def _emit(self, state: str, worker: LiveWorker, reason: str | None) -> None:
        if self.on_event is not None:
            self.on_event(state, worker, reason)
