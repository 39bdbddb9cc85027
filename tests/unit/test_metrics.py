"""/metrics: prometheus_client's exposition parsed back with its own parsers, counters
that add up to the ledger, incremental scrapes, the reclaim histogram, the aiohttp route
over real HTTP (text and OpenMetrics, loopback only, the ledger read off the loop), and
the docs and the Grafana dashboard naming only metrics that exist."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from earnings_world import DAY, make_world, request, write_requests
from isense_slurm.config import load_config
from isense_slurm.http.metrics_route import make_metrics_route, metrics_routes
from isense_slurm.meter.ledger import Ledger
from isense_slurm.report.metrics import MetricsSource

REPO = Path(__file__).resolve().parents[2]
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)  # what Prometheus 2.x sends
MODEL_GPUS = {"tiny": 2, "big": 1}  # the configured models of earnings_world's config


class Scrape:
    """One exposition, parsed: family types by exposed name, samples by sample name."""

    def __init__(self, text: str, openmetrics: bool = False):
        self.text = text
        families = list((parse_openmetrics if openmetrics else text_string_to_metric_families)(text))
        # The parsers name a counter family without its _total; the exposed name has it.
        self.types = {f.name + ("_total" if f.type == "counter" else ""): f.type for f in families}
        assert len(self.types) == len(families), "a family declared twice"
        self.samples: dict[str, dict[tuple, float]] = {}
        for f in families:
            for s in f.samples:
                self.samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value

    def __contains__(self, name: str) -> bool:
        return name in self.types

    def values(self, name: str, nonzero: bool = False) -> dict[tuple, float]:
        found = self.samples.get(name, {})
        return {k: v for k, v in found.items() if v} if nonzero else found


def busy_ledger(tmp_path):
    config, ledger = make_world(tmp_path)
    write_requests(
        config,
        [
            request("a", DAY + 1, model="tiny", prompt=1000, completion=500, cached=200),
            request("b", DAY + 2, model="tiny", status="partial", prompt=100, completion=50),
            request("c", DAY + 3, model="big", prompt=1000, completion=500),
        ],
    )
    with Ledger.open(ledger) as book:
        book.worker_event("10", state="serving", node="n1", gpus=2, model="tiny", at=DAY)
        book.worker_event("11", state="lent", node="n2", gpus=None, model="tiny", at=DAY)  # tiny: 2 GPUs configured
        book.worker_event("12", state="draining", node="n3", gpus=4, model="big", at=DAY)
        book.worker_event("13", state="serving", node="n4", gpus=1, model="big", at=DAY)
        book.worker_event("13", state="ended", reason="preempted", at=DAY + 5)
        book.record_reclaim("90", node="n1", submit_time=DAY, start_time=DAY + 0.4)  # <= 0.5
        book.record_reclaim("91", node="n2", submit_time=DAY, start_time=DAY + 1.5)  # <= 2
        book.record_reclaim("92", node="n3", submit_time=DAY, start_time=DAY + 45)  # +Inf only
        book.record_reclaim("93", node="n4", submit_time=DAY + 10)  # not started: not counted yet
    return config, ledger


GATEWAY = {
    "workers": [
        {"model": "tiny", "state": "serving", "outstanding": 3},
        {"model": "tiny", "state": "draining", "outstanding": 1},
    ],
    "models": {
        "tiny": {"requests": 9, "rejected": 4, "retries": 1, "in_flight": 2},
        "big": {"requests": 1, "rejected": 0, "retries": 0, "in_flight": 0},
    },
}


def test_exposition_parses_and_counters_match_the_ledger(tmp_path):
    _, ledger = busy_ledger(tmp_path)
    source = MetricsSource(ledger, MODEL_GPUS, currency="EUR", clock=lambda: DAY + 60)
    m = Scrape(source.scrape(GATEWAY))
    assert m.types["isense_tokens_in_total"] == "counter" and m.types["isense_workers"] == "gauge"
    assert m.values("isense_tokens_in_total") == {(("model", "big"),): 1000, (("model", "tiny"),): 1100}
    assert m.values("isense_tokens_out_total") == {(("model", "big"),): 500, (("model", "tiny"),): 550}
    assert m.values("isense_tokens_cached_total")[(("model", "tiny"),)] == 200
    assert m.values("isense_requests_total", nonzero=True) == {
        (("model", "big"), ("status", "ok")): 1,
        (("model", "tiny"), ("status", "ok")): 1,
        (("model", "tiny"), ("status", "partial")): 1,
    }
    # Every configured model and status has its series from the start (at 0).
    assert len(m.values("isense_requests_total")) == 2 * 4
    assert m.values("isense_requests_total")[(("model", "big"), ("status", "aborted"))] == 0
    # tiny: 800 x 0.10 + 200 x 0.05 + 500 x 0.40 = 290,000 nanos, + 100 x 0.10 + 50 x 0.40 = 30,000; share 0.7.
    gross = m.values("isense_revenue_gross_total")
    assert gross[(("currency", "EUR"), ("model", "tiny"))] == 0.00032
    assert gross[(("currency", "EUR"), ("model", "big"))] == 0.002
    assert m.values("isense_revenue_operator_total")[(("currency", "EUR"), ("model", "big"))] == 0.0014
    assert m.values("isense_workers") == {
        (("state", "lent"),): 1,
        (("state", "serving"),): 1,
        (("state", "draining"),): 1,
    }
    assert m.values("isense_lent_gpus") == {(("model", "big"),): 4, (("model", "tiny"),): 4}
    assert m.values("isense_gateway_live_workers") == {(("model", "big"),): 0, (("model", "tiny"),): 1}
    assert m.values("isense_gateway_draining_workers")[(("model", "tiny"),)] == 1
    assert m.values("isense_gateway_outstanding_requests")[(("model", "tiny"),)] == 4
    assert m.values("isense_gateway_in_flight_requests")[(("model", "tiny"),)] == 2
    assert m.values("isense_gateway_requests_total")[(("model", "tiny"),)] == 9
    assert m.values("isense_gateway_retries_total")[(("model", "tiny"),)] == 1
    assert m.values("isense_gateway_rejected_total") == {(("model", "big"),): 0, (("model", "tiny"),): 4}
    assert m.values("isense_ledger_up") == {(): 1}
    assert 0 <= m.values("isense_metrics_scrape_seconds")[()] < 60


def test_a_fresh_site_has_every_series_at_zero(tmp_path):
    """Configured models have their series before any row or request: dashboards show 0,
    and rate()/increase() see each counter start at 0."""
    _, ledger = make_world(tmp_path)
    m = Scrape(MetricsSource(ledger, MODEL_GPUS, currency="EUR").scrape({"workers": [], "models": {}}))
    for name in (
        "isense_tokens_in_total",
        "isense_tokens_out_total",
        "isense_tokens_cached_total",
        "isense_lent_gpus",
        "isense_gateway_live_workers",
        "isense_gateway_rejected_total",
        "isense_gateway_requests_total",
    ):
        assert m.values(name) == {(("model", "big"),): 0, (("model", "tiny"),): 0}, name
    assert m.values("isense_revenue_gross_total") == {
        (("currency", "EUR"), ("model", "big")): 0,
        (("currency", "EUR"), ("model", "tiny")): 0,
    }
    assert m.values("isense_workers") == {(("state", s),): 0 for s in ("lent", "serving", "draining")}
    assert m.values("isense_reclaim_seconds_count") == {(): 0}


def test_reclaim_histogram_buckets_are_cumulative_and_end_at_count(tmp_path):
    _, ledger = busy_ledger(tmp_path)
    m = Scrape(MetricsSource(ledger, clock=lambda: DAY + 60).scrape())
    assert m.types["isense_reclaim_seconds"] == "histogram"
    buckets = sorted(m.values("isense_reclaim_seconds_bucket").items(), key=lambda kv: float(dict(kv[0])["le"]))
    assert [dict(labels)["le"] for labels, _ in buckets] == ["0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "+Inf"]
    assert [count for _, count in buckets] == [1, 1, 2, 2, 2, 2, 3]
    assert m.values("isense_reclaim_seconds_count") == {(): 3}
    assert m.values("isense_reclaim_seconds_sum")[()] == pytest.approx(0.4 + 1.5 + 45, abs=1e-6)


def test_scrapes_add_only_what_is_new_and_count_a_reclaim_once(tmp_path):
    config, ledger = busy_ledger(tmp_path)
    now = [DAY + 60]
    source = MetricsSource(ledger, clock=lambda: now[0])
    first = Scrape(source.scrape())
    assert first.values("isense_reclaim_seconds_count") == {(): 3}
    write_requests(
        config, [request("d", DAY + 4, model="big", prompt=10, completion=5), request("a", DAY + 1, model="tiny")]
    )  # a repeat of a: the ledger ignores it
    with Ledger.open(ledger) as book:
        book.record_reclaim("93", start_time=DAY + 13)  # the reclaim left open now started: 3 s
    second = Scrape(source.scrape())
    assert second.values("isense_tokens_in_total") == {(("model", "big"),): 1010, (("model", "tiny"),): 1100}
    assert second.values("isense_reclaim_seconds_count") == {(): 4}
    third = Scrape(source.scrape())  # nothing new: nothing counted twice
    assert third.values("isense_reclaim_seconds_count") == {(): 4}
    assert third.values("isense_tokens_out_total") == second.values("isense_tokens_out_total")
    assert source.counters.reclaims.next_id == 5 and not source.counters.reclaims.counted


def test_a_missing_ledger_scrapes_as_down_with_gateway_figures(tmp_path):
    m = Scrape(MetricsSource(tmp_path / "none.db").scrape({"workers": [], "models": {"tiny": {"rejected": 2}}}))
    assert m.values("isense_ledger_up") == {(): 0}
    assert m.values("isense_gateway_rejected_total") == {(("model", "tiny"),): 2}
    assert "isense_tokens_in_total" not in m


def test_label_values_are_escaped(tmp_path):
    config, ledger = make_world(tmp_path)
    write_requests(config, [request("x", DAY, model='we"ird\\name\nx')])
    source = MetricsSource(ledger, clock=lambda: DAY)
    text = source.scrape()
    assert 'model="we\\"ird\\\\name\\nx"' in text
    assert list(Scrape(text).values("isense_tokens_in_total")) == [(("model", 'we"ird\\name\nx'),)]


def test_route_serves_text_or_openmetrics_over_http_to_loopback_only(tmp_path):
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    config, _ = busy_ledger(tmp_path)
    cfg = load_config(config)
    calls, threads = [], []

    def gateway_stats():
        calls.append(threading.current_thread())
        return {"workers": [], "models": {"tiny": {"requests": 1}}}

    async def scenario(allow, accept=None):
        app = web.Application()
        if allow is None:  # what isense serve and isense gateway mount
            [(method, path, route)] = metrics_routes(cfg, gateway_stats=gateway_stats)
            assert (method, path) == ("GET", "/metrics")
        else:
            route = make_metrics_route(cfg.ledger.path, gateway_stats=gateway_stats, allow=allow)
        render = route.source.render

        def spy(*args):
            threads.append(threading.current_thread())
            return render(*args)

        route.source.render = spy
        app.router.add_get("/metrics", route)
        headers = {"Accept": accept} if accept else {}
        async with TestServer(app) as server, ClientSession() as session:
            async with session.get(server.make_url("/metrics"), headers=headers) as response:
                return response.status, response.headers["Content-Type"], await response.text()

    status, content_type, text = asyncio.run(scenario(None))
    assert (status, content_type) == (200, TEXT_CONTENT_TYPE)
    m = Scrape(text)
    assert m.values("isense_gateway_requests_total") == {(("model", "big"),): 0, (("model", "tiny"),): 1}
    assert m.values("isense_lent_gpus")[(("model", "tiny"),)] == 4
    # The registry is read on the event loop, the ledger on an executor thread.
    assert calls == [threading.main_thread()] and threads and threads[0] is not threading.main_thread()

    # Prometheus asks for OpenMetrics first: it gets it, with the same figures.
    status, content_type, text = asyncio.run(scenario(None, PROMETHEUS_ACCEPT))
    assert status == 200 and content_type.startswith("application/openmetrics-text;")
    assert text.endswith("# EOF\n")
    om = Scrape(text, openmetrics=True)
    assert om.values("isense_tokens_in_total") == m.values("isense_tokens_in_total")
    assert om.values("isense_reclaim_seconds_bucket") == m.values("isense_reclaim_seconds_bucket")

    # Only loopback by default (the test server is on 127.0.0.1); other networks are refused.
    calls.clear()
    status, _, text = asyncio.run(scenario(["10.0.0.0/8"]))
    assert status == 403 and "not served to 127.0.0.1" in text and calls == []


def exported_names(m: Scrape) -> set[str]:
    suffixes = {"histogram": ("_bucket", "_sum", "_count")}
    return {name + s for name, kind in m.types.items() for s in suffixes.get(kind, ("",))}


def test_the_grafana_dashboard_queries_only_metrics_that_exist(tmp_path):
    _, ledger = busy_ledger(tmp_path)
    m = Scrape(MetricsSource(ledger, clock=lambda: DAY + 60).scrape({"workers": [], "models": {}}))
    dashboard = json.loads((REPO / "docs" / "grafana" / "isense-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\bisense_[a-z_]+", target["expr"])
    }
    assert len(used) >= 8 and used <= exported_names(m), used - exported_names(m)


def test_the_operator_guide_lists_exactly_the_metrics_served(tmp_path):
    """docs/operator-guide.md's Metrics table: every family `isense serve` serves, with
    its type and labels, and nothing else."""
    _, ledger = busy_ledger(tmp_path)
    m = Scrape(MetricsSource(ledger, MODEL_GPUS, currency="EUR", clock=lambda: DAY + 60).scrape(GATEWAY))
    guide = (REPO / "docs" / "operator-guide.md").read_text()
    section = guide.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, tuple[str, set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `isense_") or len(cells) != 4:
            continue
        # "model, status (`ok`, ...)", "`le` 0.5, 1, ...": the words before any values.
        words = [part.split()[0].strip("`") for part in re.sub(r"\(.*?\)", "", cells[2]).split(",") if part.strip()]
        labels = {w for w in words if re.fullmatch(r"[a-z]+", w)}
        for name in re.findall(r"`(isense_[a-z_]+)`", cells[0]):
            listed[name] = (cells[1], labels)
    assert len(listed) >= 18 and set(listed) == set(m.types), set(listed) ^ set(m.types)
    for name, (kind, labels) in listed.items():
        assert m.types[name] == kind, name
        served = {k for series in m.samples.get(name, m.samples.get(name + "_bucket", {})) for k, _ in series}
        assert served - {"le"} == labels - {"le"}, (name, served, labels)


def test_a_ledger_whose_rowids_went_back_is_summed_again_from_the_start(tmp_path):
    """The newest rows deleted (or rows renumbered by a VACUUM; the admin guide says not
    to): the highest rowid drops below the scraper's position, and the totals are summed
    afresh instead of staying stuck."""
    import sqlite3

    _, ledger = busy_ledger(tmp_path)
    source = MetricsSource(ledger, clock=lambda: DAY + 60)
    assert Scrape(source.scrape()).values("isense_tokens_in_total")[(("model", "big"),)] == 1000
    with sqlite3.connect(ledger) as db:
        db.execute("DELETE FROM requests WHERE id = 'c'")  # the newest row, the only one of big
    db.close()
    assert Scrape(source.scrape()).values("isense_tokens_in_total") == {(("model", "tiny"),): 1100}
