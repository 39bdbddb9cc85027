"""A real Prometheus server (Debian's, installed by dev/prometheus-setup) scraping a real
`isense gateway` process: every PromQL query of docs/grafana/isense-dashboard.json,
asked of Prometheus's HTTP API, answers with data.

Real parts: `isense gateway` on a temp ledger (request rows, worker runs and reclaims
written through the meter, as the daemon would), one worker registered over the control
protocol (with heartbeats; its vLLM is never called), clients answered 429 by the
gateway itself for a model no worker serves, and Prometheus 2.x on a loopback port with
a temp data dir, stopped at the end. No Slurm and no vLLM needed.

Every query of the dashboard is exercised with events this test creates (tokens,
revenue, lent GPUs, workers, reclaims, 429s, live workers), so each must answer with a
finite value; none is left to "the metric exists" alone.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter
from isense_slurm.secrets import worker_token
from waiting import free_port, stop_process, wait_for

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
ISENSE = Path(sys.executable).with_name("isense")
PROMETHEUS = Path(os.environ.get("ISENSE_PROMETHEUS", "/usr/bin/prometheus"))
DASHBOARD = REPO / "docs" / "grafana" / "isense-dashboard.json"
MODEL, SPARE = "tiny-llama", "spare"  # SPARE: configured, never served: always 429
SCRAPE_SECONDS = 2
# Grafana's $__rate_interval, for Prometheus's own queries: any window that reaches back
# before the figures this test adds after the first scrape (the test takes well under it).
RATE_INTERVAL = "30m"
WAIT = 180  # for anything a slow, busy host has to do (start a process, scrape a few times)

CONFIG = """\
[slurm]
lend_partition = "inference"
service_account = "isense"
pools = ["train"]

[gateway]
listen = "127.0.0.1:{port}"
advertise_url = "http://127.0.0.1:{port}"

[ledger]
path = "{folder}/ledger.db"

[secrets]
dir = "{folder}/secrets"

[revenue]
operator_share = 0.7
currency = "USD"

[[models]]
name = "{model}"
path = "/models/tiny"
gpus = 4
context_length = 512
price = {{ input_per_mtok = 0.10, output_per_mtok = 0.40, cached_input_per_mtok = 0.05 }}

[[models]]
name = "{spare}"
path = "/models/tiny"
gpus = 1
context_length = 512
price = {{ input_per_mtok = 0.20, output_per_mtok = 0.80, cached_input_per_mtok = 0.10 }}
"""


def http(
    method: str, url: str, *, headers: dict | None = None, body: dict | None = None, timeout: float = 30
) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    headers = {**(headers or {}), **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def answers(url: str) -> bool:
    try:
        return http("GET", url, timeout=5)[0] == 200
    except OSError:
        return False


def rows(prefix: str, at: float, n: int) -> list[RequestRow]:
    return [
        RequestRow(
            id=f"{prefix}-{i}",
            ts=at + i,
            key_id=1,
            model=MODEL,
            job_id="fake-1",
            node="n1",
            prompt_tokens=300,
            completion_tokens=100,
            cached_tokens=50 if i % 2 else 0,
            status="partial" if i == n - 1 else "ok",
            latency_ms=20.0,
            streamed=bool(i % 2),
        )
        for i in range(n)
    ]


class Site:
    """A config, secret, client key and a ledger with a few rows, then `isense gateway`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (folder / "secrets").mkdir(mode=0o700)
        secret_hex = os.urandom(32).hex()
        (folder / "secrets" / "worker.key").write_text(secret_hex + "\n")
        self.secret = secret_hex.encode()
        self.config = folder / "isense.toml"
        self.config.write_text(CONFIG.format(port=self.port, folder=folder, model=MODEL, spare=SPARE))
        self.ledger = folder / "ledger.db"
        now = time.time()
        with Ledger.open(self.ledger) as book:
            _, self.key = book.create_key("prometheus-test")
            book.worker_event("w1", state="serving", node="n2", gpus=4, model=MODEL, at=now - 600)
            book.worker_event("w2", state="lent", node="n3", gpus=None, model=MODEL, at=now - 60)
            book.worker_event("w3", state="serving", node="n4", gpus=4, model=MODEL, at=now - 900)
            book.worker_event("w3", state="draining", at=now - 30)
            for i, seconds in enumerate((0.3, 0.7, 1.6)):
                book.record_reclaim(f"t{i}", node="n1", submit_time=now - 300, start_time=now - 300 + seconds)
        self.write_rows("before", now - 120, 5)
        self.proc: subprocess.Popen | None = None

    def write_rows(self, prefix: str, at: float, n: int) -> None:
        with RequestWriter(self.ledger, prices={MODEL: _price()}, operator_share=0.7, currency="USD") as writer:
            for row in rows(prefix, at, n):
                writer.submit(row)

    def start(self) -> None:
        self.log = open(self.folder / "gateway.log", "ab")
        self.proc = subprocess.Popen(
            [str(ISENSE), "--config", str(self.config), "gateway"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            assert self.proc.poll() is None, f"isense gateway exited: {self.log_text()}"
            return answers(self.url + "/metrics")

        wait_for(ready, WAIT, "isense gateway to answer /metrics", interval=0.2)

    def control(self, action: str, payload: dict) -> int:
        token = worker_token(self.secret, payload["job_id"])
        return http(
            "POST", f"{self.url}/internal/workers/{action}", body=payload, headers={"Authorization": f"Bearer {token}"}
        )[0]

    def log_text(self) -> str:
        return (self.folder / "gateway.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.log.close()


def _price():
    from isense_slurm.config import Price

    return Price(0.10, 0.40, 0.05)


class FakeWorker:
    """Registers as a worker of MODEL and heartbeats every 2 s; nothing ever calls it."""

    def __init__(self, site: Site, job_id: str = "fake-1"):
        self.site, self.job_id = site, job_id
        self._stop = threading.Event()
        self.register()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def register(self) -> None:
        status = self.site.control(
            "register",
            {"job_id": self.job_id, "node": "n1", "gpus": "0,1,2,3", "model": MODEL, "url": "http://127.0.0.1:9"},
        )
        assert status == 200

    def _beat(self) -> None:
        while not self._stop.wait(2):
            try:
                if self.site.control("heartbeat", {"job_id": self.job_id}) == 404:
                    self.register()
            except (OSError, AssertionError):
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


class Prometheus:
    """Prometheus on a loopback port with a temp data dir, scraping one target."""

    def __init__(self, folder: Path, target: str):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {SCRAPE_SECONDS}s\n"
            f"  scrape_timeout: {SCRAPE_SECONDS}s\n"
            "scrape_configs:\n"
            "  - job_name: isense\n"
            "    static_configs:\n"
            f'      - targets: ["{target}"]\n'
        )
        self.log = open(folder / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(PROMETHEUS),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=folder,
        )

        def ready() -> bool:
            assert self.proc.poll() is None, f"prometheus exited: {self.log_text()}"
            return answers(self.url + "/-/ready")

        wait_for(ready, WAIT, "prometheus to be ready", interval=0.2)

    def query(self, expr: str) -> list[dict]:
        status, text = http("GET", f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        answer = json.loads(text)
        assert status == 200 and answer["status"] == "success", (expr, status, text)
        assert answer["data"]["resultType"] == "vector", (expr, answer)
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The single value of `expr` now, or None while it has none."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def targets(self) -> list[dict]:
        return json.loads(http("GET", f"{self.url}/api/v1/targets")[1])["data"]["activeTargets"]

    def log_text(self) -> str:
        return (self.folder / "prometheus.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, panels inside rows included."""

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels") or [])

    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (p.get("title", "?"), t["expr"])
        for p in panels(dashboard["panels"])
        for t in p.get("targets") or []
        if t.get("expr")
    ]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail(
            f"{PROMETHEUS} is missing: run dev/prometheus-setup (dev/test does) or deselect -m 'not prometheus'"
        )
    tmp_path = tmp_path_factory.mktemp("prometheus")
    site = Site(tmp_path)
    worker = prometheus = None
    try:
        site.start()
        worker = FakeWorker(site)
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{site.port}")
        yield site, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        if worker is not None:
            worker.stop()
        site.stop()


def test_every_dashboard_query_answers_from_a_real_prometheus(running):
    site, prom = running

    # 1. Prometheus scrapes the gateway: the target is up and the first figures are in.
    wait_for(
        lambda: prom.value('up{job="isense"}') == 1, WAIT, "Prometheus to scrape isense gateway (up == 1)", interval=0.5
    )
    wait_for(
        lambda: prom.value("sum(isense_reclaim_seconds_count)") == 3,
        WAIT,
        "the first scrape with the ledger's reclaims",
        interval=0.5,
    )
    [target] = prom.targets()
    assert target["health"] == "up" and target["lastError"] == "", target
    assert prom.value("sum(isense_gateway_live_workers)") == 1

    # 2. Events after that first scrape, so that rate(), increase() and the reclaim
    # quantiles have an increase to work on: requests served, two more reclaims, and
    # clients answered 429 for a model no worker serves.
    site.write_rows("after", time.time(), 8)
    with Ledger.open(site.ledger) as book:
        now = time.time()
        book.record_reclaim("t8", node="n2", submit_time=now - 2, start_time=now - 1.2)  # 0.8 s
        book.record_reclaim("t9", node="n3", submit_time=now - 2, start_time=now - 0.6)  # 1.4 s
    for _ in range(3):
        status, text = http(
            "POST",
            f"{site.url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {site.key}"},
            body={"model": SPARE, "messages": [{"role": "user", "content": "hi"}]},
        )
        assert status == 429, text
    wait_for(
        lambda: (
            prom.value("sum(isense_reclaim_seconds_count)") == 5
            and prom.value("sum(isense_gateway_rejected_total)") == 3
            and prom.value("sum(isense_requests_total)") == 13
        ),
        WAIT,
        "Prometheus to scrape the new rows, reclaims and 429s",
        interval=0.5,
    )
    # One more scrape after that: rate() extrapolates from the last two samples.
    scraped = prom.value('timestamp(up{job="isense"})')
    wait_for(lambda: (prom.value('timestamp(up{job="isense"})') or 0) > scraped, WAIT, "one more scrape", interval=0.5)

    # 3. Every query of the dashboard, as Grafana would send it.
    queries = dashboard_queries()
    assert len(queries) >= 10
    answered = {}
    for title, expr in queries:
        promql = expr.replace("$__rate_interval", RATE_INTERVAL)
        assert "$" not in promql, f"{title}: a Grafana variable this test does not fill: {expr}"
        result = prom.query(promql)
        assert result, f"{title}: no data for {promql}"
        values = [float(r["value"][1]) for r in result]
        assert all(math.isfinite(v) for v in values), f"{title}: {promql} -> {result}"
        answered[expr] = {json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in result}

    # What the events above must show, where a value is certain.
    def only(expr_part: str) -> dict:
        [found] = [v for e, v in answered.items() if expr_part in e]
        return found

    assert only("min(isense_ledger_up)") == {"{}": 1.0}
    assert only("sum(isense_lent_gpus)") == {"{}": 4 + 4 + 4 + 4}  # w1, w2 (model's 4), w3, fake-1
    assert only("sum by (state) (isense_workers)") == {
        '{"state": "draining"}': 1,
        '{"state": "lent"}': 1,
        '{"state": "serving"}': 2,
    }
    assert only("sum by (model) (isense_gateway_live_workers)") == {
        f'{{"model": "{MODEL}"}}': 1,
        f'{{"model": "{SPARE}"}}': 0,
    }
    assert only("increase(isense_revenue_operator_total[24h])")['{"currency": "USD"}'] > 0
    assert only("sum(rate(isense_gateway_rejected_total[$__rate_interval])) /")["{}"] > 0
    p95 = only("histogram_quantile(0.95")["{}"]
    assert 1.0 <= p95 <= 2.0, p95  # the two reclaims since the first scrape: 0.8 s and 1.4 s
    for name in ("isense_tokens_out_total", "isense_tokens_in_total"):
        by_model = only(f"sum by (model) (rate({name}[$__rate_interval]))")
        assert by_model[f'{{"model": "{MODEL}"}}'] > 0, by_model


def test_curl_reads_the_gateway_metrics(running):
    """What the operator guide shows: `curl -s localhost:<port>/metrics`."""
    site, _ = running
    text = subprocess.run(
        ["curl", "-sS", "--max-time", "30", f"http://localhost:{site.port}/metrics"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert re.search(rf'^isense_tokens_in_total{{model="{MODEL}"}} \d+\.0$', text, re.M), text
    assert re.search(r"^isense_ledger_up 1\.0$", text, re.M)
    assert re.search(rf'^isense_gateway_live_workers{{model="{MODEL}"}} 1\.0$', text, re.M)
