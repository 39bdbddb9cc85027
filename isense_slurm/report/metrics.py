"""Prometheus /metrics, written with prometheus_client: custom collectors (no client-side
metric objects) over figures that live elsewhere.

Sources:
- the ledger (read-only), LedgerCollector: tokens, requests and revenue by model
  (counters kept as running totals, each scrape reads only the rows added since the last
  one), worker runs by state and lent GPUs (gauges), and the reclaim latency histogram
  (seconds from a training job's submit to its start on GPUs taken back from workers);
- the gateway's registry, GatewayCollector over one Registry.snapshot(): live and
  draining workers, outstanding and in-flight requests, accepted, retried and
  rejected-with-429 requests per model.

http/metrics_route.py serves them as GET /metrics (`isense serve`, with or without the
gateway, and `isense gateway`). The ledger is read on an executor thread; the registry
snapshot is taken on the event loop (the registry is not thread-safe) and handed to
the thread.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from isense_slurm.errors import ConfigError
from isense_slurm.meter import metrics_queries as queries
from isense_slurm.meter.earnings import add_totals, open_readonly
from isense_slurm.meter.money import NANOS_PER_UNIT
from isense_slurm.meter.rows import REQUEST_STATUSES, WORKER_STATES, RequestTotals

RECLAIM_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A reclaim row still missing its submit or start time this long after it was written
# is given up on (a lost event), so the histogram's read position can move past it.
RECLAIM_GIVE_UP_SECONDS = 3600.0
ACTIVE_STATES = tuple(s for s in WORKER_STATES if s != "ended")


# --- running totals from the ledger ---------------------------------------------------


@dataclass
class ReclaimHistogram:
    """Cumulative buckets of submit->start seconds; each reclaim counted once, when both
    times are known (they arrive in any order, from the hooks and the controller)."""

    bounds: tuple[float, ...] = RECLAIM_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(RECLAIM_BUCKETS) + 1))  # last: +Inf only
    total: float = 0.0
    count: int = 0
    next_id: int = 0  # rows below this are all counted or given up
    counted: set[int] = field(default_factory=set)  # counted ids at or above next_id

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        for i, bound in enumerate(self.bounds):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """[(le, reclaims at or under it)], ending with ("+Inf", count)."""
        out, running = [], 0
        for bound, n in zip([*self.bounds, float("inf")], self.counts):
            running += n
            out.append((floatToGoString(bound), running))
        return out

    def update(self, rows: list[queries.ReclaimTimes], now: float) -> None:
        settled = True  # every row so far is counted or given up: next_id may move
        for row in rows:
            done = row.id in self.counted
            if not done and row.submit_time is not None and row.start_time is not None:
                self.observe(row.start_time - row.submit_time)
                self.counted.add(row.id)
                done = True
            if settled and (done or row.created_at < now - RECLAIM_GIVE_UP_SECONDS):
                self.counted.discard(row.id)
                self.next_id = row.id + 1
            else:
                settled = False


class LedgerCounters:
    """Everything /metrics reads from the ledger, kept between scrapes."""

    def __init__(self) -> None:
        self.last_rowid = 0
        self.requests: dict[tuple[str, str, str], RequestTotals] = {}
        self.reclaims = ReclaimHistogram()
        self.workers: list[queries.ActiveWorkers] = []

    def refresh(self, conn, now: float) -> None:
        top, groups = queries.requests_after(conn, self.last_rowid)
        if top < self.last_rowid:  # rowids renumbered (a VACUUM): sum again from the start
            self.last_rowid, self.requests = 0, {}
            top, groups = queries.requests_after(conn, 0)
        for g in groups:
            key = (g.model, g.status, g.currency)
            self.requests[key] = add_totals(self.requests.get(key, RequestTotals()), g)
        self.last_rowid = top
        self.workers = queries.active_workers(conn)
        self.reclaims.update(queries.reclaims_from(conn, self.reclaims.next_id), now)


# --- collectors -------------------------------------------------------------------------


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None, value: float | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value, labels=labels)


def ledger_families(counters: LedgerCounters, model_gpus: Mapping[str, int], currency: str | None = None) -> list:
    """The ledger's metric families. Configured models (the keys of `model_gpus`) and the
    configured currency get their series at 0 before their first row, so rate() and
    increase() see a series start at 0 and dashboards show 0, not "no data"."""
    tokens_in = _counter("isense_tokens_in_total", "Prompt tokens served, by model (ledger).", ["model"])
    tokens_out = _counter("isense_tokens_out_total", "Completion tokens served, by model (ledger).", ["model"])
    tokens_cached = _counter(
        "isense_tokens_cached_total",
        "Cached prompt tokens (part of isense_tokens_in_total), by model (ledger).",
        ["model"],
    )
    requests = _counter(
        "isense_requests_total", "Requests that reached a worker, by model and status (ledger).", ["model", "status"]
    )
    gross = _counter(
        "isense_revenue_gross_total", "Gross token revenue in currency units, by model (ledger).", ["model", "currency"]
    )
    operator = _counter(
        "isense_revenue_operator_total",
        "The operator's share of token revenue in currency units, by model (ledger).",
        ["model", "currency"],
    )
    per_status: dict[tuple[str, str], int] = {(m, s): 0 for m in model_gpus for s in REQUEST_STATUSES}
    per_model: dict[str, RequestTotals] = {m: RequestTotals() for m in model_gpus}
    money: dict[tuple[str, str], list[int]] = {(m, currency): [0, 0] for m in model_gpus} if currency else {}
    for (model, status, cur), t in counters.requests.items():
        per_status[(model, status)] = per_status.get((model, status), 0) + t.requests
        per_model[model] = add_totals(per_model.get(model, RequestTotals()), t)
        if cur:  # unpriced requests earn nothing
            pair = money.setdefault((model, cur), [0, 0])
            pair[0] += t.gross_nanos
            pair[1] += t.operator_nanos
    for (model, status), n in sorted(per_status.items()):
        requests.add_metric([model, status], n)
    for model, t in sorted(per_model.items()):
        tokens_in.add_metric([model], t.prompt_tokens)
        tokens_out.add_metric([model], t.completion_tokens)
        tokens_cached.add_metric([model], t.cached_tokens)
    for (model, cur), (g, o) in sorted(money.items()):
        gross.add_metric([model, cur], g / NANOS_PER_UNIT)
        operator.add_metric([model, cur], o / NANOS_PER_UNIT)

    workers, lent = _worker_families(counters, model_gpus)
    hist = HistogramMetricFamily(
        "isense_reclaim_seconds",
        "Seconds from a training job's submit to its start on GPUs taken back from workers.",
        buckets=counters.reclaims.cumulative(),
        sum_value=counters.reclaims.total,
    )
    return [tokens_in, tokens_out, tokens_cached, requests, gross, operator, workers, lent, hist]


def _worker_families(
    counters: LedgerCounters, model_gpus: Mapping[str, int]
) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    """Worker runs not ended, by state, and the GPUs they hold, by model."""
    workers = _gauge("isense_workers", "Worker runs not ended, by state (ledger).", ["state"])
    lent = _gauge("isense_lent_gpus", "GPUs held by worker runs not ended, by model (ledger).", ["model"])
    by_state: dict[str, int] = {state: 0 for state in ACTIVE_STATES}
    gpus: dict[str, int] = {m: 0 for m in model_gpus}
    for w in counters.workers:
        by_state[w.state] = by_state.get(w.state, 0) + w.count
        model = w.model or ""
        gpus[model] = gpus.get(model, 0) + w.gpus + w.without_gpus * model_gpus.get(model, 1)
    for state, count in by_state.items():
        workers.add_metric([state], count)
    for model, count in sorted(gpus.items()):
        lent.add_metric([model], count)
    return workers, lent


class LedgerCollector(Collector):
    """The ledger's side of /metrics: running totals, refreshed by each collect().

    collect() opens the ledger read-only and closes it again (well under a millisecond
    once the first scrape has summed the requests table): call it off the event loop.
    Scrapes take turns (a lock): the running totals are not shared between threads.
    """

    def __init__(
        self,
        ledger_path,
        model_gpus: Mapping[str, int] | None = None,
        *,
        currency: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.path = Path(ledger_path)
        self.model_gpus = dict(model_gpus or {})
        self.currency = currency or None
        self.clock = clock
        self.counters = LedgerCounters()
        self.error: str | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator:
        with self._lock:
            up = self._refresh()
            families = ledger_families(self.counters, self.model_gpus, self.currency) if up else []
        yield from families
        yield _gauge("isense_ledger_up", "1 when the last scrape could read the ledger.", value=1 if up else 0)

    def _refresh(self) -> bool:
        try:
            conn = open_readonly(self.path)
        except ConfigError as err:  # not there yet, or not a ledger
            self.error = str(err)
            return False
        try:
            self.counters.refresh(conn, self.clock())
        except sqlite3.Error as err:  # a scrape must answer, and say the ledger is down
            self.error = f"{self.path}: {err}"
            return False
        finally:
            conn.close()
        self.error = None
        return True


class GatewayCollector(Collector):
    """The gateway's side of /metrics, over one Registry.snapshot():
    {"workers": [{model, state, outstanding, ...}], "models": {name: ModelStats.as_dict()}}.

    Take the snapshot on the event loop; collect() may then run on any thread. Every
    model in `models` (the configured ones) has its series, at 0 until it is used.
    """

    def __init__(self, stats: Mapping, models: Iterable[str] = ()):
        self.stats = stats
        self.models = tuple(models)

    def collect(self) -> Iterator:
        live = _gauge("isense_gateway_live_workers", "Workers the gateway routes to, by model.", ["model"])
        draining = _gauge("isense_gateway_draining_workers", "Workers finishing their requests, by model.", ["model"])
        outstanding = _gauge("isense_gateway_outstanding_requests", "Requests on workers now, by model.", ["model"])
        in_flight = _gauge("isense_gateway_in_flight_requests", "Requests inside the gateway now, by model.", ["model"])
        accepted = _counter(
            "isense_gateway_requests_total", "Requests accepted by the gateway since it started, by model.", ["model"]
        )
        retries = _counter("isense_gateway_retries_total", "Extra attempts after a worker failed, by model.", ["model"])
        rejected = _counter(
            "isense_gateway_rejected_total",
            "Requests answered 429 (no live worker) since the gateway started, by model.",
            ["model"],
        )
        models = dict(self.stats.get("models") or {})
        per_model: dict[str, list[int]] = {name: [0, 0, 0] for name in [*self.models, *models]}
        for w in self.stats.get("workers") or []:
            counts = per_model.setdefault(str(w.get("model", "")), [0, 0, 0])
            counts[0 if w.get("state") == "serving" else 1] += 1
            counts[2] += int(w.get("outstanding") or 0)
        for name in sorted(per_model):
            live_n, draining_n, outstanding_n = per_model[name]
            live.add_metric([name], live_n)
            draining.add_metric([name], draining_n)
            outstanding.add_metric([name], outstanding_n)
            counters = models.get(name) or {}
            in_flight.add_metric([name], int(counters.get("in_flight", 0)))
            accepted.add_metric([name], int(counters.get("requests", 0)))
            retries.add_metric([name], int(counters.get("retries", 0)))
            rejected.add_metric([name], int(counters.get("rejected", 0)))
        yield from (live, draining, outstanding, in_flight, accepted, retries, rejected)


class _Scrape(Collector):
    """One scrape: the ledger, then the gateway (if any), then how long the two took."""

    def __init__(self, parts: list[Collector]):
        self.parts = parts

    def collect(self) -> Iterator:
        started = time.perf_counter()
        for part in self.parts:
            yield from part.collect()
        yield _gauge(
            "isense_metrics_scrape_seconds",
            "Time this scrape took to read the ledger and gateway figures.",
            value=round(time.perf_counter() - started, 6),
        )


class MetricsSource:
    """Everything /metrics serves: the ledger collector, kept between scrapes, and a
    gateway collector made per scrape from a registry snapshot."""

    def __init__(
        self,
        ledger_path,
        model_gpus: Mapping[str, int] | None = None,
        *,
        currency: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.ledger = LedgerCollector(ledger_path, model_gpus, currency=currency, clock=clock)

    @property
    def counters(self) -> LedgerCounters:
        return self.ledger.counters

    def collector(self, gateway_stats: Mapping | None = None) -> Collector:
        parts: list[Collector] = [self.ledger]
        if gateway_stats is not None:
            parts.append(GatewayCollector(gateway_stats, self.ledger.model_gpus))
        return _Scrape(parts)

    def render(self, gateway_stats: Mapping | None = None, accept: str = "") -> tuple[bytes, str]:
        """(body, Content-Type) for a scraper's Accept header: Prometheus' text format, or
        OpenMetrics when asked for. Reads the ledger: call it off the event loop."""
        encode, content_type = choose_encoder(accept)
        return encode(self.collector(gateway_stats)), content_type

    def scrape(self, gateway_stats: Mapping | None = None) -> str:
        """The text format (0.0.4), as `curl` gets it."""
        return self.render(gateway_stats)[0].decode()
