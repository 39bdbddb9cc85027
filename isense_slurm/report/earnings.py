"""The earnings report: token revenue per period and group, beside lent GPU-hours.

Lent GPU-hours of a worker run: (ended, or now while it runs, minus the time it was
lent) x its GPUs, clipped to each period. A run with no GPU count recorded counts the
GPUs its model is configured with (1 for an unknown model). Lent time cannot be split
between clients, so under --group client only the TOTAL row has GPU-hours.
Worker rows carry no partition: all lent time belongs to the lend partition.
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

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / SECONDS_PER_HOUR

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
        lent = _lent_seconds(runs, start, end, now, group, partition, model_gpus)
        for key in sorted(set(sums) | set(lent), key=lambda g: (g is None, str(g))):
            totals = sums.get(key, RequestTotals())
            seconds = None if group == "client" else lent.get(key, 0.0)
            if totals.requests or seconds:
                rows.append(EarningsRow(period.label, period.start, period.end, key, totals, seconds))
        for totals in sums.values():
            all_totals = queries.add_totals(all_totals, totals)
    overall = sum(_lent_seconds(runs, since.timestamp(), until.timestamp(), now, None, partition, model_gpus).values())
    total = EarningsRow("TOTAL", since, until, None, all_totals, overall)
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


def _lent_seconds(runs, start: float, end: float, now: float, group, partition: str, model_gpus) -> dict:
    """GPU-seconds lent within [start, end), by group (client: not attributable, empty)."""
    seconds: dict = {}
    if group == "client":
        return seconds
    for run in runs:
        run_end = run.ended_at if run.ended_at is not None else now
        overlap = min(run_end, end, now) - max(run.started_at, start)
        if overlap <= 0:
            continue
        gpus = run.gpus if run.gpus is not None else model_gpus.get(run.model, 1)
        key = {"node": run.node, "model": run.model, "partition": partition}.get(group) if group else None
        seconds[key] = seconds.get(key, 0.0) + overlap * gpus
    return seconds
