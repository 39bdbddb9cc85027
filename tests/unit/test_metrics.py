"""/metrics: the text exposition format parsed back strictly, counters that add up to the
ledger, incremental scrapes, the reclaim histogram, and the aiohttp route over real HTTP."""

from __future__ import annotations

import asyncio
import math
import re

import pytest

from earnings_world import DAY, make_world, request, write_requests
from isense_slurm.meter.ledger import Ledger
from isense_slurm.report.metrics import CONTENT_TYPE, MetricsSource, make_metrics_route

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = rf'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL})(?:,{_LABEL})*)?\}})? (\S+)$")
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def parse(text: str) -> dict[str, dict]:
    """Strict parse of the 0.0.4 text format: {family: {"type", "help", "samples": [(name, labels, value)]}}.

    Fails on anything a Prometheus server would refuse: a sample before its TYPE, a
    family declared twice, a sample name outside its family, a bad label or value.
    """
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and name not in families, line
            families[name] = {"help": help_text, "type": None, "samples": []}
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and families[name]["type"] is None and kind in SUFFIXES, line
            families[name]["type"] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            kind = families[current]["type"]
            assert name in {current + s for s in SUFFIXES[kind]}, line
            number = float(value)  # +Inf, NaN and plain numbers all parse
            assert not math.isnan(number), line
            pairs = dict(_LABEL_PAIR.findall(labels or ""))
            families[current]["samples"].append((name, pairs, number))
    return families


def values(families, name, suffix="") -> dict:
    """{tuple of sorted label items: value} of one family's samples."""
    return {tuple(sorted(labels.items())): value for n, labels, value in families[name]["samples"]
            if n == name + suffix}


def busy_ledger(tmp_path):
    config, ledger = make_world(tmp_path)
    write_requests(config, [
        request("a", DAY + 1, model="tiny", prompt=1000, completion=500, cached=200),
        request("b", DAY + 2, model="tiny", status="partial", prompt=100, completion=50),
        request("c", DAY + 3, model="big", prompt=1000, completion=500),
    ])
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


def test_exposition_parses_and_counters_match_the_ledger(tmp_path):
    _, ledger = busy_ledger(tmp_path)
    source = MetricsSource(ledger, {"tiny": 2, "big": 1}, clock=lambda: DAY + 60)
    gateway = {
        "workers": [{"model": "tiny", "state": "serving", "outstanding": 3},
                    {"model": "tiny", "state": "draining", "outstanding": 1}],
        "models": {"tiny": {"requests": 9, "rejected": 4, "retries": 1, "in_flight": 2},
                   "big": {"requests": 1, "rejected": 0, "retries": 0, "in_flight": 0}},
    }
    families = parse(source.scrape(gateway))
    assert families["isense_tokens_in_total"]["type"] == "counter"
    assert values(families, "isense_tokens_in_total") == {(("model", "big"),): 1000, (("model", "tiny"),): 1100}
    assert values(families, "isense_tokens_out_total") == {(("model", "big"),): 500, (("model", "tiny"),): 550}
    assert values(families, "isense_tokens_cached_total")[(("model", "tiny"),)] == 200
    assert values(families, "isense_requests_total") == {
        (("model", "big"), ("status", "ok")): 1, (("model", "tiny"), ("status", "ok")): 1,
        (("model", "tiny"), ("status", "partial")): 1}
    # tiny: 800 x 0.10 + 200 x 0.05 + 500 x 0.40 = 290,000 nanos, + 100 x 0.10 + 50 x 0.40 = 30,000; share 0.7.
    gross = values(families, "isense_revenue_gross_total")
    assert gross[(("currency", "EUR"), ("model", "tiny"))] == 0.00032
    assert gross[(("currency", "EUR"), ("model", "big"))] == 0.002
    assert values(families, "isense_revenue_operator_total")[(("currency", "EUR"), ("model", "big"))] == 0.0014
    assert values(families, "isense_workers") == {
        (("state", "lent"),): 1, (("state", "serving"),): 1, (("state", "draining"),): 1}
    assert values(families, "isense_lent_gpus") == {(("model", "big"),): 4, (("model", "tiny"),): 4}
    assert values(families, "isense_gateway_live_workers")[(("model", "tiny"),)] == 1
    assert values(families, "isense_gateway_draining_workers")[(("model", "tiny"),)] == 1
    assert values(families, "isense_gateway_outstanding_requests")[(("model", "tiny"),)] == 4
    assert values(families, "isense_gateway_rejected_total") == {(("model", "big"),): 0, (("model", "tiny"),): 4}
    assert values(families, "isense_ledger_up") == {(): 1}


def test_reclaim_histogram_buckets_are_cumulative_and_end_at_count(tmp_path):
    _, ledger = busy_ledger(tmp_path)
    families = parse(MetricsSource(ledger, clock=lambda: DAY + 60).scrape())
    hist = families["isense_reclaim_seconds"]
    assert hist["type"] == "histogram"
    buckets = [(labels["le"], value) for name, labels, value in hist["samples"] if name.endswith("_bucket")]
    assert [le for le, _ in buckets] == ["0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "+Inf"]
    assert [count for _, count in buckets] == [1, 1, 2, 2, 2, 2, 3]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts)
    assert values(families, "isense_reclaim_seconds", "_count") == {(): 3}
    assert values(families, "isense_reclaim_seconds", "_sum")[()] == pytest.approx(0.4 + 1.5 + 45, abs=1e-6)


def test_scrapes_add_only_what_is_new_and_count_a_reclaim_once(tmp_path):
    config, ledger = busy_ledger(tmp_path)
    now = [DAY + 60]
    source = MetricsSource(ledger, clock=lambda: now[0])
    first = parse(source.scrape())
    assert values(first, "isense_reclaim_seconds", "_count") == {(): 3}
    write_requests(config, [request("d", DAY + 4, model="big", prompt=10, completion=5),
                            request("a", DAY + 1, model="tiny")])  # a repeat of a: the ledger ignores it
    with Ledger.open(ledger) as book:
        book.record_reclaim("93", start_time=DAY + 13)  # the reclaim left open now started: 3 s
    second = parse(source.scrape())
    assert values(second, "isense_tokens_in_total") == {(("model", "big"),): 1010, (("model", "tiny"),): 1100}
    assert values(second, "isense_reclaim_seconds", "_count") == {(): 4}
    third = parse(source.scrape())  # nothing new: nothing counted twice
    assert values(third, "isense_reclaim_seconds", "_count") == {(): 4}
    assert values(third, "isense_tokens_out_total") == values(second, "isense_tokens_out_total")
    assert source.counters.reclaims.next_id == 5 and not source.counters.reclaims.counted


def test_a_missing_ledger_scrapes_as_down_with_gateway_figures(tmp_path):
    text = MetricsSource(tmp_path / "none.db").scrape({"workers": [], "models": {"tiny": {"rejected": 2}}})
    families = parse(text)
    assert values(families, "isense_ledger_up") == {(): 0}
    assert values(families, "isense_gateway_rejected_total") == {(("model", "tiny"),): 2}
    assert "isense_tokens_in_total" not in families


def test_label_values_are_escaped(tmp_path):
    config, ledger = make_world(tmp_path)
    write_requests(config, [request("x", DAY, model='we"ird\\name\nx')])
    families = parse(MetricsSource(ledger, clock=lambda: DAY).scrape())
    assert list(values(families, "isense_tokens_in_total")) == [(("model", 'we\\"ird\\\\name\\nx'),)]


def test_route_serves_metrics_over_http(tmp_path):
    from aiohttp import ClientSession, web
    from aiohttp.test_utils import TestServer

    _, ledger = busy_ledger(tmp_path)
    calls = []

    def gateway_stats():
        calls.append(1)
        return {"workers": [], "models": {"tiny": {"requests": 1}}}

    async def scenario(allow):
        app = web.Application()
        route = make_metrics_route(ledger, gateway_stats=gateway_stats, model_gpus={"tiny": 2},
                                   **({} if allow is None else {"allow": allow}))
        app.router.add_get("/metrics", route)
        async with TestServer(app) as server, ClientSession() as session:
            async with session.get(server.make_url("/metrics")) as response:
                return response.status, response.headers["Content-Type"], await response.text()

    status, content_type, text = asyncio.run(scenario(None))
    assert (status, content_type) == (200, CONTENT_TYPE)
    families = parse(text)
    assert values(families, "isense_gateway_requests_total") == {(("model", "tiny"),): 1}
    assert values(families, "isense_lent_gpus")[(("model", "tiny"),)] == 4 and calls == [1]
    # Only loopback by default (the test server is on 127.0.0.1); other networks are refused.
    status, _, text = asyncio.run(scenario(["10.0.0.0/8"]))
    assert status == 403 and "not served to 127.0.0.1" in text and calls == [1]


def test_the_grafana_dashboard_queries_only_metrics_that_exist(tmp_path):
    import json
    from pathlib import Path

    _, ledger = busy_ledger(tmp_path)
    families = parse(MetricsSource(ledger, clock=lambda: DAY + 60).scrape({"workers": [], "models": {}}))
    exported = {name + suffix for name, f in families.items() for suffix in SUFFIXES[f["type"]]}
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana" / "isense-dashboard.json")
                           .read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bisense_[a-z_]+", target["expr"])}
    assert len(used) >= 8 and used <= exported, used - exported
