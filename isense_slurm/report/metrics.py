"""Prometheus metrics in the text exposition format (0.0.4), hand-rolled: no client library.

Sources:
- the ledger (read-only): tokens, requests and revenue by model (counters kept as
  running totals, each scrape reads only the rows added since the last one), worker runs
  by state and lent GPUs (gauges), and the reclaim latency histogram (seconds from a
  training job's submit to its start on GPUs taken back from workers);
- the gateway's registry, passed in as a plain dict (Registry.snapshot()): live and
  draining workers, outstanding and in-flight requests, accepted, retried and
  rejected-with-429 requests per model.

The daemon mounts it with

    app.router.add_get("/metrics", make_metrics_route(cfg.ledger.path,
        gateway_stats=gateway.registry.snapshot, model_gpus={m.name: m.gpus for m in cfg.models}))

(served to loopback only unless `allow=[...networks]` says otherwise).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from isense_slurm.errors import ConfigError
from isense_slurm.meter import metrics_queries as queries
from isense_slurm.meter.earnings import add_totals
from isense_slurm.meter.money import NANOS_PER_UNIT
from isense_slurm.meter.rows import WORKER_STATES, RequestTotals

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RECLAIM_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# A reclaim row still missing its submit or start time this long after it was written
# is given up on (a lost event), so the histogram's read position can move past it.
RECLAIM_GIVE_UP_SECONDS = 3600.0
ACTIVE_STATES = tuple(s for s in WORKER_STATES if s != "ended")


# --- the exposition format ------------------------------------------------------------

def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_value(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def sample(name: str, labels: Mapping[str, str] | None, value: float | int) -> str:
    if labels:
        inner = ",".join(f'{key}="{escape_label(str(val))}"' for key, val in labels.items())
        return f"{name}{{{inner}}} {format_value(value)}"
    return f"{name} {format_value(value)}"


@dataclass
class Family:
    """One metric family: HELP, TYPE and its samples."""

    name: str
    kind: str  # counter, gauge, histogram
    help: str
    samples: list[str] = field(default_factory=list)

    def add(self, labels: Mapping[str, str] | None, value: float | int, suffix: str = "") -> None:
        self.samples.append(sample(self.name + suffix, labels, value))

    def text(self) -> str:
        head = f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(line + "\n" for line in self.samples)


def exposition(families: Iterable[Family]) -> str:
    return "".join(f.text() for f in families)


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
        out, running = [], 0
        for bound, n in zip([*self.bounds, math.inf], self.counts):
            running += n
            out.append(("+Inf" if math.isinf(bound) else format_value(bound), running))
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


# --- rendering --------------------------------------------------------------------------

def ledger_families(counters: LedgerCounters, model_gpus: Mapping[str, int]) -> list[Family]:
    tokens_in = Family("isense_tokens_in_total", "counter", "Prompt tokens served, by model (ledger).")
    tokens_out = Family("isense_tokens_out_total", "counter", "Completion tokens served, by model (ledger).")
    tokens_cached = Family("isense_tokens_cached_total", "counter",
                           "Cached prompt tokens (part of isense_tokens_in_total), by model (ledger).")
    requests = Family("isense_requests_total", "counter", "Requests that reached a worker, by model and status (ledger).")
    gross = Family("isense_revenue_gross_total", "counter", "Gross token revenue in currency units, by model (ledger).")
    operator = Family("isense_revenue_operator_total", "counter",
                      "The operator's share of token revenue in currency units, by model (ledger).")
    per_model: dict[str, RequestTotals] = {}
    money: dict[tuple[str, str], list[int]] = {}
    for (model, status, currency), t in sorted(counters.requests.items()):
        requests.add({"model": model, "status": status}, t.requests)
        per_model[model] = add_totals(per_model.get(model, RequestTotals()), t)
        pair = money.setdefault((model, currency), [0, 0])
        pair[0] += t.gross_nanos
        pair[1] += t.operator_nanos
    for model, t in per_model.items():
        tokens_in.add({"model": model}, t.prompt_tokens)
        tokens_out.add({"model": model}, t.completion_tokens)
        tokens_cached.add({"model": model}, t.cached_tokens)
    for (model, currency), (g, o) in money.items():
        if currency:  # unpriced requests earn nothing
            gross.add({"model": model, "currency": currency}, g / NANOS_PER_UNIT)
            operator.add({"model": model, "currency": currency}, o / NANOS_PER_UNIT)

    workers = Family("isense_workers", "gauge", "Worker runs not ended, by state (ledger).")
    lent = Family("isense_lent_gpus", "gauge", "GPUs held by worker runs not ended, by model (ledger).")
    by_state = {state: 0 for state in ACTIVE_STATES}
    gpus: dict[str, int] = {}
    for w in counters.workers:
        by_state[w.state] = by_state.get(w.state, 0) + w.count
        model = w.model or ""
        gpus[model] = gpus.get(model, 0) + w.gpus + w.without_gpus * model_gpus.get(model, 1)
    for state, count in by_state.items():
        workers.add({"state": state}, count)
    for model, count in sorted(gpus.items()):
        lent.add({"model": model}, count)

    hist = Family("isense_reclaim_seconds", "histogram",
                  "Seconds from a training job's submit to its start on GPUs taken back from workers.")
    for le, count in counters.reclaims.cumulative():
        hist.add({"le": le}, count, "_bucket")
    hist.add(None, counters.reclaims.total, "_sum")
    hist.add(None, counters.reclaims.count, "_count")
    return [tokens_in, tokens_out, tokens_cached, requests, gross, operator, workers, lent, hist]


def gateway_families(stats: Mapping) -> list[Family]:
    """From Registry.snapshot(): {"workers": [{model, state, outstanding, ...}], "models": {name: counters}}."""
    live = Family("isense_gateway_live_workers", "gauge", "Workers the gateway routes to, by model.")
    draining = Family("isense_gateway_draining_workers", "gauge", "Workers finishing their requests, by model.")
    outstanding = Family("isense_gateway_outstanding_requests", "gauge", "Requests on workers now, by model.")
    in_flight = Family("isense_gateway_in_flight_requests", "gauge", "Requests inside the gateway now, by model.")
    accepted = Family("isense_gateway_requests_total", "counter",
                      "Requests accepted by the gateway since it started, by model.")
    retries = Family("isense_gateway_retries_total", "counter", "Extra attempts after a worker failed, by model.")
    rejected = Family("isense_gateway_rejected_total", "counter",
                      "Requests answered 429 (no live worker) since the gateway started, by model.")
    models = dict(stats.get("models") or {})
    per_model: dict[str, list[int]] = {name: [0, 0, 0] for name in models}
    for w in stats.get("workers") or []:
        counts = per_model.setdefault(str(w.get("model", "")), [0, 0, 0])
        counts[0 if w.get("state") == "serving" else 1] += 1
        counts[2] += int(w.get("outstanding") or 0)
    for name in sorted(per_model):
        labels = {"model": name}
        live_n, draining_n, outstanding_n = per_model[name]
        live.add(labels, live_n)
        draining.add(labels, draining_n)
        outstanding.add(labels, outstanding_n)
        counters = models.get(name) or {}
        in_flight.add(labels, int(counters.get("in_flight", 0)))
        accepted.add(labels, int(counters.get("requests", 0)))
        retries.add(labels, int(counters.get("retries", 0)))
        rejected.add(labels, int(counters.get("rejected", 0)))
    return [live, draining, outstanding, in_flight, accepted, retries, rejected]


# --- the source and the route ----------------------------------------------------------

class MetricsSource:
    """The ledger's side of /metrics: running totals, one scrape at a time.

    Each scrape opens the ledger read-only and closes it again (well under a
    millisecond): scrapes run on executor threads, and a connection stays on its thread.
    """

    def __init__(self, ledger_path, model_gpus: Mapping[str, int] | None = None,
                 clock: Callable[[], float] = time.time):
        self.path = Path(ledger_path)
        self.model_gpus = dict(model_gpus or {})
        self.clock = clock
        self.counters = LedgerCounters()
        self.error: str | None = None
        self._lock = threading.Lock()

    def scrape(self, gateway_stats: Mapping | None = None) -> str:
        """The whole exposition text; reads the ledger (call it off the event loop)."""
        started = time.perf_counter()
        with self._lock:
            up = self._refresh()
            families = ledger_families(self.counters, self.model_gpus) if up else []
        if gateway_stats is not None:
            families += gateway_families(gateway_stats)
        ledger_up = Family("isense_ledger_up", "gauge", "1 when the last scrape could read the ledger.")
        ledger_up.add(None, 1 if up else 0)
        took = Family("isense_metrics_scrape_seconds", "gauge", "Time this scrape took to read and render.")
        took.add(None, round(time.perf_counter() - started, 6))
        return exposition([*families, ledger_up, took])

    def _refresh(self) -> bool:
        import sqlite3

        from isense_slurm.meter.earnings import open_readonly

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


LOOPBACK = ("127.0.0.0/8", "::1/128")


def make_metrics_route(ledger_path, *, gateway_stats: Callable[[], Mapping] | None = None,
                       model_gpus: Mapping[str, int] | None = None, allow: Iterable[str] | None = LOOPBACK,
                       source: MetricsSource | None = None):
    """An aiohttp handler for GET /metrics.

    `gateway_stats`: called on the event loop (the registry is not thread-safe), e.g.
    `gateway.registry.snapshot`; the ledger is read in the default executor so a scrape
    never stalls the gateway. `allow`: networks that may scrape (CIDR strings; default
    loopback only, since the daemon's port also faces API clients and the figures are
    the operator's revenue); None allows everyone.
    """
    import asyncio
    import ipaddress

    from aiohttp import web

    from isense_slurm.gateway.errors import error_response

    metrics = source or MetricsSource(ledger_path, model_gpus)
    networks = None if allow is None else [ipaddress.ip_network(n, strict=False) for n in allow]

    def allowed(remote: str | None) -> bool:
        if networks is None:
            return True
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return any(address in net for net in networks if net.version == address.version)

    async def handle_metrics(request: web.Request) -> web.Response:
        if not allowed(request.remote):
            return error_response(403, f"/metrics is not served to {request.remote}")
        stats = gateway_stats() if gateway_stats is not None else None
        text = await asyncio.get_running_loop().run_in_executor(None, metrics.scrape, stats)
        return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})

    handle_metrics.source = metrics
    return handle_metrics
