"""The model behind `isense status` and `isense top`: Slurm views and ledger figures in,
sinfo-style rows out. Pure: no I/O, no clock (the caller passes `now`).

GPUs of a node split into
- LENT: GPUs of running jobs of the service account in the lend partition (the workers),
- TRAIN: every other allocated GPU (Slurm's own count, or the jobs' if that is higher),
- IDLE: the rest, on nodes that can take work; a down or drained node has no idle GPUs.
A worker's model and state come from the ledger (lent / serving / draining); a worker
job the ledger does not know yet shows as "lent", its model from a job comment
"isense:MODEL" when it has one. A node whose workers of a model keep ending before they
serve is "held" for that model (the running controller says so; see HeldBack).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from isense_slurm.contracts.workers import WorkerRule
from isense_slurm.meter.earnings import add_totals
from isense_slurm.meter.rows import RequestTotals, WorkerInfo
from isense_slurm.slurm.hostlist import compact
from isense_slurm.slurm.models import Job, Node, Partition

VIEWS = ("partition", "node")
WORKER_STATE_ORDER = ("lent", "serving", "draining", "held")
COMMENT_PREFIX = "isense:"


@dataclass(frozen=True)
class LedgerFigures:
    """What the ledger says: live worker runs by job id, request sums by node."""

    workers: Mapping[str, WorkerInfo] = field(default_factory=dict)
    last_minute: Mapping[str | None, RequestTotals] = field(default_factory=dict)
    today: Mapping[str | None, RequestTotals] = field(default_factory=dict)
    window_seconds: float = 60.0
    # GPU-seconds lent today (UTC), and of them before the workers served (starting).
    lent_today: tuple[float, float] = (0.0, 0.0)
    starts_today: int = 0  # worker runs started today that served and reported their start
    start_steps: Mapping[str, float | None] = field(default_factory=dict)  # their medians


@dataclass(frozen=True)
class HeldBack:
    """A (node, model) pair the controller holds back after workers ended before serving."""

    node: str
    model: str
    failures: int  # in a row
    state: str  # backing-off, trying (one worker after the back-off), may-try
    until: datetime  # end of the back-off (aware UTC)
    last_job_id: str
    last_reason: str  # "FAILED, exit 1: <the worker's last output line>"
    text: str = ""  # the controller's one-line account


@dataclass(frozen=True)
class WorkerView:
    job_id: str
    model: str | None
    state: str
    gpus: int  # on the node (node rows) or in all (totals)


@dataclass(frozen=True)
class Row:
    """One line: a node (node view) or the nodes of a partition in one state."""

    label: str  # the node, or the partition
    partitions: tuple[str, ...]
    state: str  # sinfo's long state: idle, mixed, idle+drain, ...
    nodes: tuple[str, ...]
    gpus_total: int = 0
    gpus_train: int = 0
    gpus_lent: int = 0
    gpus_idle: int = 0
    workers: tuple[WorkerView, ...] = ()
    last_minute: RequestTotals = RequestTotals()
    today: RequestTotals = RequestTotals()
    avail: str | None = None  # the partition's state (UP, DOWN, ...) when known
    is_default: bool = False
    held: tuple[tuple[str, str], ...] = ()  # (node, model) pairs held back

    @property
    def nodelist(self) -> str:
        return compact(self.nodes)

    @property
    def models(self) -> list[str]:
        return sorted({w.model for w in self.workers if w.model})

    def worker_states(self) -> dict[str, int]:
        """{'serving': 2, 'lent': 1} in lifecycle order."""
        counts: dict[str, int] = {}
        for w in self.workers:
            counts[w.state] = counts.get(w.state, 0) + 1
        if self.held:
            counts["held"] = len(self.held)
        order = {s: i for i, s in enumerate(WORKER_STATE_ORDER)}
        return dict(sorted(counts.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


@dataclass(frozen=True)
class StatusReport:
    view: str  # "partition" or "node"
    at: datetime
    day_start: datetime  # today's UTC midnight: TOKENS/EARNED count from here
    window_seconds: float  # REQ/S and TOK/S average over this window
    currency: str
    lend_partition: str
    partition: str | None  # the -p filter
    rows: list[Row]
    total: Row
    held_back: tuple[HeldBack, ...] = ()  # the controller's, for the nodes shown
    lent_today: tuple[float, float] = (0.0, 0.0)  # GPU-seconds lent today, of them starting (all nodes)
    starts_today: int = 0
    start_steps: Mapping[str, float | None] = field(default_factory=dict)  # median s after job start

    def rate(self, count: int) -> float:
        return count / self.window_seconds if self.window_seconds > 0 else 0.0

    @property
    def start_share_today(self) -> float | None:
        """The share of today's lent GPU-time spent starting workers (None: none lent)."""
        lent, starting = self.lent_today
        return starting / lent if lent > 0 else None


def build_status(
    nodes: Iterable[Node],
    jobs: Iterable[Job],
    partitions: Iterable[Partition],
    figures: LedgerFigures,
    *,
    lend_partition: str,
    service_account: str,
    currency: str,
    at: datetime,
    day_start: datetime,
    view: str = "partition",
    partition: str | None = None,
    held_back: Iterable[HeldBack] = (),
) -> StatusReport:
    """Rows per node (view "node") or per partition and node state (view "partition").

    `partition` keeps only the nodes of that partition (the caller checks it exists).
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    node_list = sorted(nodes, key=_name_key)
    if partition is not None:
        node_list = [n for n in node_list if partition in n.partitions]
    per_node = node_rows(node_list, jobs, figures, lend_partition=lend_partition, service_account=service_account)
    shown = {n.name for n in node_list}
    held = tuple(sorted((h for h in held_back if h.node in shown), key=lambda h: (_name_key_of(h.node), h.model)))
    if held:
        per_node = [
            replace(row, held=tuple((h.node, h.model) for h in held if h.node == row.label)) for row in per_node
        ]
    parts = list(partitions)
    if view == "node":
        rows = per_node
    else:
        rows = partition_rows(node_list, per_node, parts, only=partition)
    total = _merge("TOTAL", (), "", per_node)
    if partition is None:
        # Requests on nodes Slurm no longer lists (or with no node recorded) count too.
        total = _with_traffic(total, _sum(figures.last_minute.values()), _sum(figures.today.values()))
    return StatusReport(
        view,
        at,
        day_start,
        figures.window_seconds,
        currency,
        lend_partition,
        partition,
        rows,
        total,
        held,
        figures.lent_today,
        figures.starts_today,
        figures.start_steps,
    )


def node_rows(
    nodes: list[Node], jobs: Iterable[Job], figures: LedgerFigures, *, lend_partition: str, service_account: str
) -> list[Row]:
    wanted = {n.name for n in nodes}
    lent: dict[str, int] = {}
    train: dict[str, int] = {}
    workers: dict[str, list[WorkerView]] = {}
    rule = WorkerRule(service_account, lend_partition)
    for job in jobs:
        if not job.is_active or not job.nodes:
            continue
        # Every job of the service account in the lend partition holds lent GPUs, named or not.
        is_worker = rule.is_worker(job.user, job.partition)
        view = _worker_view(job, figures.workers) if is_worker else None
        for name, gpus in job_gpus_per_node(job).items():
            if name not in wanted:
                continue
            if view is not None:  # a worker's
                lent[name] = lent.get(name, 0) + gpus
                workers.setdefault(name, []).append(WorkerView(view.job_id, view.model, view.state, gpus))
            else:
                train[name] = train.get(name, 0) + gpus
    rows = []
    for node in nodes:
        name = node.name
        gpus_lent = lent.get(name, 0)
        allocated = max(node.gpus_alloc, gpus_lent + train.get(name, 0))
        rows.append(
            Row(
                label=name,
                partitions=node.partitions,
                state=node.state_text,
                nodes=(name,),
                gpus_total=node.gpus_total,
                gpus_train=max(0, allocated - gpus_lent),
                gpus_lent=gpus_lent,
                gpus_idle=max(0, node.gpus_total - allocated) if node.usable else 0,
                workers=tuple(workers.get(name, ())),
                last_minute=figures.last_minute.get(name, RequestTotals()),
                today=figures.today.get(name, RequestTotals()),
            )
        )
    return rows


def partition_rows(
    nodes: list[Node], per_node: list[Row], partitions: list[Partition], only: str | None = None
) -> list[Row]:
    """sinfo's default view: one row per partition and node state, partitions in
    slurm.conf order (then any a node names that scontrol did not list)."""
    known = {p.name: p for p in partitions}
    order = [p.name for p in partitions]
    for node in nodes:
        order.extend(p for p in node.partitions if p not in order)
    groups: dict[tuple[str, str], list[Row]] = {}
    for node, row in zip(nodes, per_node):
        for name in node.partitions:
            groups.setdefault((name, row.state), []).append(row)
    rows = []
    for name in order:
        if only is not None and name != only:
            continue
        part = known.get(name)
        for (group_partition, state), members in groups.items():
            if group_partition != name:
                continue
            row = _merge(name, (name,), state, members)
            rows.append(_replace_partition_info(row, part))
    return rows


def job_gpus_per_node(job: Job) -> dict[str, int]:
    """GPUs a running job holds on each of its nodes: the allocated indices when Slurm
    printed them, else its per-node request, else its total spread evenly."""
    indices = {name: len(ids) for name, ids in job.gpu_indices if ids}
    fallback = job.gpus_per_node or (job.gpus // max(1, len(job.nodes)))
    return {name: indices.get(name, fallback) for name in job.nodes}


def _worker_view(job: Job, ledger_workers: Mapping[str, WorkerInfo]) -> WorkerView:
    known = ledger_workers.get(str(job.job_id))
    model = known.model if known and known.model else _comment_model(job.comment)
    state = known.state if known else "lent"
    return WorkerView(str(job.job_id), model, state, job.gpus)


def _comment_model(comment: str) -> str | None:
    text = (comment or "").strip()
    if text.startswith(COMMENT_PREFIX):
        return text[len(COMMENT_PREFIX) :].strip() or None
    return None


def _merge(label: str, partitions: tuple[str, ...], state: str, rows: list[Row]) -> Row:
    """Sum node rows; a worker spanning several of them counts once."""
    workers: dict[str, WorkerView] = {}
    for row in rows:
        for w in row.workers:
            seen = workers.get(w.job_id)
            workers[w.job_id] = w if seen is None else WorkerView(w.job_id, w.model, w.state, seen.gpus + w.gpus)
    return Row(
        label=label,
        partitions=partitions,
        state=state,
        nodes=tuple(r.label for r in rows),
        gpus_total=sum(r.gpus_total for r in rows),
        gpus_train=sum(r.gpus_train for r in rows),
        gpus_lent=sum(r.gpus_lent for r in rows),
        gpus_idle=sum(r.gpus_idle for r in rows),
        workers=tuple(workers.values()),
        last_minute=_sum(r.last_minute for r in rows),
        today=_sum(r.today for r in rows),
        held=tuple(dict.fromkeys(pair for r in rows for pair in r.held)),
    )


def _replace_partition_info(row: Row, part: Partition | None) -> Row:
    if part is None:
        return row
    return replace(row, avail=part.state, is_default=part.is_default)


def _with_traffic(row: Row, last_minute: RequestTotals, today: RequestTotals) -> Row:
    return replace(row, last_minute=last_minute, today=today)


def _sum(items: Iterable[RequestTotals]) -> RequestTotals:
    total = RequestTotals()
    for item in items:
        total = add_totals(total, item)
    return total


def _name_key(node: Node):
    return _name_key_of(node.name)


def _name_key_of(name: str):
    # n2 before n10, as sinfo sorts.
    digits = len(name) - len(name.rstrip("0123456789"))
    if digits:
        return (name[:-digits], int(name[-digits:]), name)
    return (name, -1, name)
