"""The earnings report: token revenue per period and group, beside lent GPU-hours.

Lent GPU-hours of a worker run: (ended, or now while it runs, minus the time it was
lent) x its GPUs, clipped to each period. A run with no GPU count recorded counts the
GPUs its model is configured with (1 for an unknown model). Lent time cannot be split
between clients, so under --group client only the TOTAL row has GPU-hours.
Worker rows carry no partition: all lent time belongs to the lend partition.

Of that lent time, the part before the worker first served (job start to registration
with the gateway, or to its end when it never served) is its start: vLLM loading, not
earning. START% is that part's share of the row's lent GPU-hours, so an operator sees
what the starts cost a lend.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from isense_slurm.meter import earnings as queries
from isense_slurm.meter.rows import RequestTotals
from isense_slurm.periods import Period

GROUP_CHOICES = ("node", "partition", "model", "client")
SECONDS_PER_HOUR = 3600


@dataclass(frozen=True)
class EarningsRow:
    period: str  # a period label, or "TOTAL"
    start: datetime
    end: datetime
    group: str | None  # the node, partition, model or client; None when not grouped or unknown
    totals: RequestTotals
    gpu_seconds: float | None  # None: lent time cannot be attributed (client groups)
    start_gpu_seconds: float | None = None  # of gpu_seconds, before the runs served

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / SECONDS_PER_HOUR

    @property
    def start_share(self) -> float | None:
        """The share of the lent GPU-time spent starting (None: no lent time)."""
        if not self.gpu_seconds or self.start_gpu_seconds is None:
            return None
        return self.start_gpu_seconds / self.gpu_seconds

    def gross_per_gpu_hour_nanos(self) -> int | None:
        """Gross token revenue per lent GPU-hour, rounded half-even to the nano."""
        if not self.gpu_seconds:
            return None
        value = Decimal(self.totals.gross_nanos) * SECONDS_PER_HOUR / Decimal(repr(self.gpu_seconds))
        return int(value.to_integral_value(ROUND_HALF_EVEN))

    def raw_equivalent_nanos(self, raw_gpu_hour_nanos: int) -> int | None:
        """What renting the same GPU-hours raw would have earned."""
        if self.gpu_seconds is None:
            return None
        value = Decimal(raw_gpu_hour_nanos) * Decimal(repr(self.gpu_seconds)) / SECONDS_PER_HOUR
        return int(value.to_integral_value(ROUND_HALF_EVEN))


@dataclass(frozen=True)
class EarningsReport:
    by: str
    group: str | None
    since: datetime
    until: datetime
    currency: str
    raw_gpu_hour_nanos: int
    rows: list[EarningsRow]
    total: EarningsRow
    warnings: list[str] = field(default_factory=list)


def build_report(
    conn,
    periods: list[Period],
    *,
    by: str,
    group: str | None,
    now: float,
    partition: str,
    model_gpus: dict[str, int],
    currency: str,
    raw_gpu_hour_nanos: int,
) -> EarningsReport:
    """Rows for every period (already clipped to --since/--until) with requests or lent time."""
    since, until = periods[0].start, periods[-1].end
    runs = queries.worker_runs(conn, since.timestamp(), until.timestamp())
    rows: list[EarningsRow] = []
    all_totals = RequestTotals()
    for period in periods:
        start, end = period.start_ts, period.end_ts
        sums = _request_sums(conn, start, end, group, partition)
        lent = lent_seconds(runs, start, end, now, group, partition, model_gpus)
        for key in sorted(set(sums) | set(lent), key=lambda g: (g is None, str(g))):
            totals = sums.get(key, RequestTotals())
            seconds, starting = (None, None) if group == "client" else lent.get(key, (0.0, 0.0))
            if totals.requests or seconds:
                rows.append(EarningsRow(period.label, period.start, period.end, key, totals, seconds, starting))
        for totals in sums.values():
            all_totals = queries.add_totals(all_totals, totals)
    whole = lent_seconds(runs, since.timestamp(), until.timestamp(), now, None, partition, model_gpus)
    overall, starting = whole.get(None, (0.0, 0.0))
    total = EarningsRow("TOTAL", since, until, None, all_totals, overall, starting)
    warnings = []
    seen = queries.currencies(conn, since.timestamp(), until.timestamp())
    if seen - {currency}:
        warnings.append(
            f"requests in this range were priced in {', '.join(sorted(seen))}, the config says {currency}: "
            "amounts in different currencies are summed as they are"
        )
    return EarningsReport(by, group, since, until, currency, raw_gpu_hour_nanos, rows, total, warnings)


def _request_sums(conn, start: float, end: float, group: str | None, partition: str) -> dict:
    if group == "partition":  # every request ran on a lent worker in the lend partition
        sums = queries.request_sums(conn, start, end, None)
        return {partition: sums[None]} if sums else {}
    return queries.request_sums(conn, start, end, group)


def lent_seconds(runs, start: float, end: float, now: float, group, partition: str, model_gpus) -> dict:
    """(GPU-seconds lent, of them before serving) within [start, end), by group (client:
    not attributable, empty)."""
    seconds: dict = {}
    if group == "client":
        return seconds
    for run in runs:
        run_end = min(run.ended_at if run.ended_at is not None else now, end, now)
        begin = max(run.started_at, start)
        overlap = run_end - begin
        if overlap <= 0:
            continue
        served = run.serving_at if run.serving_at is not None else run_end
        starting = max(0.0, min(served, run_end) - begin)
        gpus = run.gpus if run.gpus is not None else model_gpus.get(run.model, 1)
        key = {"node": run.node, "model": run.model, "partition": partition}.get(group) if group else None
        lent, before = seconds.get(key, (0.0, 0.0))
        seconds[key] = (lent + overlap * gpus, before + starting * gpus)
    return seconds
