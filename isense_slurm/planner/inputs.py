"""What the planner sees: a frozen snapshot of the pool, built by the controller.

The controller fills these from Slurm views (sinfo/squeue/scontrol), the gateway's
demand counters and its own memory (idle_since, workers it submitted that Slurm does
not show yet). All datetimes share one convention: naive local wall time, as Slurm
prints it and as availability windows are written. The planner never reads the clock;
`Snapshot.now` is the only "now".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from isense_slurm.availability import Window
from isense_slurm.contracts.states import WorkerState

# Slurm pending reasons that mean "will start when GPUs are free": not stuck.
STARTABLE_REASONS = frozenset({"", "None", "Priority", "Resources"})


@dataclass(frozen=True)
class ModelSpec:
    name: str
    gpus: int  # GPUs per worker, all on one node
    weight: float = 1.0  # share of lent GPUs when demand is equal


@dataclass(frozen=True)
class ModelStart:
    """A model's measured start (the ledger's): the median seconds from a worker job's
    start to its registration at the gateway, over its `count` latest serving runs."""

    model: str
    seconds: float
    count: int


# What Policy.from_config reads of isense's Config (the planner imports no config).
class _ModelConfig(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def gpus(self) -> int: ...
    @property
    def weight(self) -> float: ...


class _SlurmConfig(Protocol):
    @property
    def max_lend_share(self) -> float: ...
    @property
    def min_idle_seconds(self) -> float: ...
    @property
    def max_job_minutes(self) -> int: ...
    @property
    def availability(self) -> Iterable[Window]: ...
    @property
    def lend_partition(self) -> str | None: ...
    @property
    def tick_seconds(self) -> float: ...
    @property
    def drain_seconds(self) -> float: ...
    @property
    def backoff_after_failures(self) -> int: ...
    @property
    def backoff_seconds(self) -> float: ...
    @property
    def backoff_max_seconds(self) -> float: ...


class PolicyConfig(Protocol):
    @property
    def slurm(self) -> _SlurmConfig: ...
    @property
    def models(self) -> Iterable[_ModelConfig]: ...


@dataclass(frozen=True)
class Policy:
    """The config's lending rules, plus planner knobs the config does not expose."""

    max_lend_share: float
    min_idle_seconds: float
    max_job_minutes: int
    models: tuple[ModelSpec, ...]
    availability: tuple[Window, ...] = ()  # empty: always
    lend_partition: str | None = None  # when set, a node must be in it to be lent
    min_window_minutes: int = 5  # a fitted time limit shorter than this is not worth a vLLM start
    time_min_minutes: int = 5  # sbatch --time-min: backfill may cut the limit down to this
    # A worker must be scheduled and drained before a hard deadline (forecast start,
    # reservation, window end): the fitted limit ends this long before it.
    end_margin_seconds: float = 30.0
    # Pending workers with a reason outside STARTABLE_REASONS are cancelled after this.
    stuck_pending_seconds: float = 120.0
    # No crash loops (planner/backoff.py): after this many workers of a model on a node in
    # a row ended before serving, that pair waits backoff_seconds, doubled by each further
    # failure up to backoff_max_seconds, then one worker may try.
    backoff_after_failures: int = 3
    backoff_seconds: float = 60.0
    backoff_max_seconds: float = 1800.0
    # The break-even rule (planner/payback.py): a lend must be able to serve at least this
    # many times the model's measured start.
    min_serving_ratio: float = 1.0

    @classmethod
    def from_config(cls, cfg: PolicyConfig, **knobs: Any) -> Policy:
        """Policy from a loaded isense Config; `knobs` override the planner-only fields."""
        s = cfg.slurm
        knobs.setdefault("end_margin_seconds", max(30.0, 2 * s.drain_seconds))
        knobs.setdefault("stuck_pending_seconds", max(120.0, 12 * s.tick_seconds))
        return cls(
            max_lend_share=s.max_lend_share,
            min_idle_seconds=s.min_idle_seconds,
            max_job_minutes=s.max_job_minutes,
            models=tuple(ModelSpec(m.name, m.gpus, m.weight) for m in cfg.models),
            availability=tuple(s.availability),
            lend_partition=s.lend_partition,
            backoff_after_failures=s.backoff_after_failures,
            backoff_seconds=s.backoff_seconds,
            backoff_max_seconds=s.backoff_max_seconds,
            **knobs,
        )


@dataclass(frozen=True)
class PoolNode:
    """A node in one of the configured pools (the controller resolved pools to nodes)."""

    name: str
    partitions: tuple[str, ...]
    gpus_total: int
    gpus_used_by_training: int = 0  # every job that is not an isense worker
    gpus_used_by_workers: int = 0  # as Slurm allocates them (running workers)
    lendable: bool = True  # False: down, drained, draining, maintenance, not responding
    state: str = ""  # Slurm's state word, named in explanations when not lendable
    idle_since: datetime | None = None  # since when the node has had free GPUs without a break


@dataclass(frozen=True)
class Worker:
    """An isense worker job (the service account's jobs in the lend partition)."""

    job_id: str
    model: str
    gpus: int
    state: WorkerState
    node: str | None = None  # where it runs, or the node it was submitted to (-w); None: unknown
    submit_time: datetime | None = None
    end_time: datetime | None = None
    pending_reason: str = ""  # Slurm's reason while pending


@dataclass(frozen=True)
class PendingTraining:
    """A pending job that is not a worker, with Slurm's forecast (squeue --start)."""

    job_id: str
    partition: str  # may be a comma list, as squeue prints it
    gpus: int
    expected_start: datetime | None = None
    expected_nodes: tuple[str, ...] = ()
    eligible: bool = True  # False for held, dependency, begin-time or limit reasons

    @property
    def partitions(self) -> tuple[str, ...]:
        return tuple(p for p in self.partition.split(",") if p)


@dataclass(frozen=True)
class ReservedWindow:
    name: str
    nodes: tuple[str, ...]
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Demand:
    """What the gateway saw for one model since the last tick."""

    model: str
    queued: int = 0  # requests waiting for a worker now
    rejected: int = 0  # 429s since the last tick
    requests_per_second: float = 0.0

    @property
    def waiting(self) -> int:
        return self.queued + self.rejected


@dataclass(frozen=True)
class Failures:
    """Workers of `model` on `node` that ended before serving, in a row (the controller
    keeps them with planner.backoff.note_end)."""

    node: str
    model: str
    count: int
    last_at: datetime  # when the last one was seen ending
    last_job_id: str
    last_reason: str  # "FAILED, exit 1: <its last output line>"


@dataclass(frozen=True)
class Snapshot:
    now: datetime
    nodes: tuple[PoolNode, ...]
    workers: tuple[Worker, ...] = ()
    pending_training: tuple[PendingTraining, ...] = ()
    reservations: tuple[ReservedWindow, ...] = ()
    demand: tuple[Demand, ...] = ()
    failures: tuple[Failures, ...] = ()  # (node, model) pairs whose workers end before serving
    starts: tuple[ModelStart, ...] = ()  # measured starts of the models (payback.py)
