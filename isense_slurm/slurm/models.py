"""Typed, frozen views of Slurm nodes, partitions and jobs.

Whatever backend produced them (CLI JSON of any Slurm version, `scontrol show -o`, later
pyslurm), the rest of isense sees only these. States are upper case as Slurm prints
them ("IDLE", "MIXED", "RUNNING"); timestamps are timezone-aware UTC datetimes or None;
time limits are minutes, None for unlimited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# Node flags that make a node unusable for new work.
UNUSABLE_NODE_FLAGS = frozenset(
    {
        "DRAIN",
        "DRAINING",
        "DRAINED",
        "NOT_RESPONDING",
        "FAIL",
        "MAINTENANCE",
        "REBOOT_ISSUED",
        "REBOOT_REQUESTED",
        "POWERED_DOWN",
        "POWERING_DOWN",
        "POWERING_UP",
        "POWER_DOWN",
        "INVALID_REG",
        "RESERVED",
    }
)
UNUSABLE_NODE_STATES = frozenset({"DOWN", "ERROR", "FUTURE", "UNKNOWN"})

PENDING_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"})
ACTIVE_STATES = frozenset(
    {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
)
FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "PREEMPTED",
        "NODE_FAIL",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "SPECIAL_EXIT",
        "REVOKED",
    }
)


@dataclass(frozen=True)
class Node:
    name: str
    state: str  # base state: IDLE, MIXED, ALLOCATED, DOWN, ...
    flags: frozenset[str] = frozenset()  # DRAIN, NOT_RESPONDING, COMPLETING, ...
    gpus_total: int = 0
    gpus_alloc: int = 0
    partitions: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    reason: str | None = None
    reason_user: str | None = None
    reason_time: datetime | None = None
    cpus: int = 0
    cpus_alloc: int = 0
    address: str | None = None
    last_busy: datetime | None = None  # when the node last had a job (Slurm 22.05+)

    @property
    def gpus_idle(self) -> int:
        return max(0, self.gpus_total - self.gpus_alloc)

    @property
    def states(self) -> frozenset[str]:
        """Base state and flags together, for membership tests ("DRAIN" in node.states)."""
        return self.flags | {self.state}

    @property
    def usable(self) -> bool:
        """Responding, up and not draining: may take new jobs."""
        return self.state not in UNUSABLE_NODE_STATES and not (self.flags & UNUSABLE_NODE_FLAGS)

    @property
    def state_text(self) -> str:
        """sinfo-like long state: "idle", "mixed+drain"."""
        return "+".join([self.state, *sorted(self.flags)]).lower()


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: tuple[str, ...] = ()
    priority_tier: int = 1
    preempt_mode: str = "OFF"  # OFF, REQUEUE, CANCEL, SUSPEND (as Slurm prints it)
    state: str = "UP"  # UP, DOWN, DRAIN, INACTIVE
    is_default: bool = False
    max_time: int | None = None  # minutes; None: unlimited
    default_time: int | None = None  # minutes; None: the max_time applies
    grace_time: int = 0  # seconds
    total_cpus: int = 0
    total_nodes: int = 0


@dataclass(frozen=True)
class Job:
    job_id: int
    name: str
    user: str
    state: str  # RUNNING, PENDING, COMPLETED, ... (the base state)
    flags: frozenset[str] = frozenset()  # extra state flags of newer Slurm (REQUEUED, ...)
    reason: str | None = None  # why pending / why it ended; None when Slurm says "None"
    partition: str = ""
    gpus: int = 0  # GPUs of the whole job: allocated when running, requested otherwise
    gpus_per_node: int = 0  # requested GPUs per node (tres_per_node), 0 if none
    gpu_indices: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (node, GPU indices) allocated
    nodes: tuple[str, ...] = ()  # allocated nodes (empty while pending)
    required_nodes: tuple[str, ...] = ()  # asked for with -w (kept while pending)
    node_count: int = 0
    cpus: int = 0
    submit_time: datetime | None = None
    start_time: datetime | None = None  # actual start (None while pending)
    expected_start: datetime | None = None  # scheduler's estimate while pending
    end_time: datetime | None = None  # actual or projected end (None while pending)
    time_limit: int | None = None  # minutes; None: unlimited or not set
    preempt_time: datetime | None = None
    restart_count: int = 0
    comment: str = ""
    exit_code: int | None = None
    exit_signal: int | None = None
    batch_host: str | None = None
    std_out: str | None = None
    work_dir: str | None = None

    @property
    def is_pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def is_active(self) -> bool:
        """Holds nodes now (running, completing, suspended, ...)."""
        return self.state in ACTIVE_STATES

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def states(self) -> frozenset[str]:
        return self.flags | {self.state}


@dataclass(frozen=True)
class Reservation:
    name: str
    nodes: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    state: str = ""  # ACTIVE, INACTIVE
    flags: frozenset[str] = frozenset()  # MAINT, IGNORE_JOBS, ...
