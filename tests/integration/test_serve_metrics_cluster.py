"""`curl -s localhost:<port>/metrics` on a running `isense serve` (docs/operator-guide.md,
Metrics): every family the guide lists, with the gateway and without it (--no-gateway:
the ledger's figures only). Real dev cluster; the site lends nothing (its one node would
have to be idle for 11 days first), so no worker or vLLM starts."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serve_harness import ServeSite

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
GATEWAY_ONLY = {
    "isense_gateway_live_workers",
    "isense_gateway_draining_workers",
    "isense_gateway_outstanding_requests",
    "isense_gateway_in_flight_requests",
    "isense_gateway_requests_total",
    "isense_gateway_retries_total",
    "isense_gateway_rejected_total",
}


def guide_metrics() -> set[str]:
    guide = (REPO / "docs" / "operator-guide.md").read_text()
    section = guide.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return {
        name
        for line in section.splitlines()
        if line.startswith("| `isense_")
        for name in re.findall(r"`(isense_[a-z_]+)`", line.split("|")[1])
    }


def curl_metrics(port: int) -> dict[str, str]:
    """{family name as exposed: type} from `curl -s localhost:<port>/metrics`."""
    proc = subprocess.run(
        ["curl", "-s", "--max-time", "60", f"localhost:{port}/metrics"], capture_output=True, text=True, timeout=90
    )
    assert proc.returncode == 0 and proc.stdout.startswith("# HELP"), (proc.returncode, proc.stdout[:500])
    return {
        f.name + ("_total" if f.type == "counter" else ""): f.type for f in text_string_to_metric_families(proc.stdout)
    }


def test_curl_metrics_on_isense_serve_lists_what_the_operator_guide_says(cluster):
    listed = guide_metrics()
    assert len(listed) >= 18 and listed > GATEWAY_ONLY
    site = ServeSite(["n4"], name="itest-metrics", min_idle_seconds=999_999)  # {:g}: a plain integer up to 6 digits
    try:
        site.start()
        assert set(curl_metrics(site.port)) == listed

        site.kill(signal.SIGTERM)
        site.start("--no-gateway")
        assert set(curl_metrics(site.port)) == listed - GATEWAY_ONLY
    finally:
        site.close()
        site.remove()
