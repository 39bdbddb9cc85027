"""Limits per key on real `isense gateway` processes in front of the real CPU vLLM:
a key over its RPM gets 429 + Retry-After, a key over its budget gets insufficient_quota
and nothing more is served to it, and two gateways on one ledger hold one budget.
Limits are set with the real `isense keys` command; spend is read back from the ledger.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import time

import pytest

from gateway_harness import ISENSE, MODEL, Gateway, Site, error_of, http
from test_gateway import HandRegistration, dev_vllm  # noqa: F401 - the module's dev vLLM fixture
from waiting import free_port, wait_for

pytestmark = pytest.mark.vllm

EXACT = {"ignore_eos": True}
LIMITS_SETTLE = 5  # seconds: gateways reload limits and spend every second


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    return Site(tmp_path_factory.mktemp("limits"))


def keys(site: Site, *args: str) -> str:
    done = subprocess.run(
        [str(ISENSE), "--config", str(site.config), "keys", *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def new_key(site: Site, name: str, *flags: str) -> str:
    return keys(site, "create", name, *flags).splitlines()[0]


def chat(gw: Gateway, key: str, max_tokens: int = 8, stream: bool = False):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens, **EXACT}
    if stream:
        body["stream"] = True
    return http("POST", f"{gw.url}/v1/chat/completions", headers=gw.auth(key), json_body=body, timeout=600)


def key_spend(site: Site, key: str) -> int:
    rows = site.rows().values()
    prefix = key[:12]
    ids = [k["id"] for k in _keys(site) if k["prefix"] == prefix]
    return sum(r["gross_nanos"] for r in rows if r["key_id"] in ids)


def _keys(site: Site) -> list[dict]:
    import json

    return json.loads(keys(site, "list", "--json"))


@pytest.fixture(scope="module")
def pair(site, dev_vllm):  # noqa: F811 - the fixture imported above
    """Two gateways on one ledger, the dev vLLM registered with both."""
    one = Gateway(site)
    two = Gateway(site, port=free_port())
    regs = [HandRegistration(one, "dev-a", dev_vllm), HandRegistration(two, "dev-a", dev_vllm)]
    yield one, two
    for reg in regs:
        reg.stop()
    one.stop()
    two.stop()


def test_a_key_over_its_rpm_gets_429_with_retry_after(site, pair):
    one, _ = pair
    key = new_key(site, "rpm-2", "--rpm", "2")
    time.sleep(LIMITS_SETTLE)
    assert [chat(one, key).status_code for _ in range(2)] == [200, 200]
    refused = chat(one, key)
    assert refused.status_code == 429, refused.text
    assert error_of(refused)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert chat(one, site.key).status_code == 200  # another key is not held back


def test_a_key_over_its_budget_gets_insufficient_quota_and_nothing_more(site, pair):
    one, _ = pair
    # tiny-llama's price (dev config): a few dozen tokens per request cost well under
    # 0.0001; a budget of 0.000001 is used up by the first answer.
    key = new_key(site, "budget", "--budget-total", "0.000001")
    time.sleep(LIMITS_SETTLE)
    first = chat(one, key, max_tokens=16, stream=True)
    assert first.status_code == 200 and first.text.rstrip().endswith("data: [DONE]")
    spent = key_spend(site, key)
    assert spent > 0
    for _ in range(3):
        refused = chat(one, key)
        assert refused.status_code == 429, refused.text
        assert error_of(refused)["type"] == "insufficient_quota"
        assert error_of(refused)["code"] == "insufficient_quota"
    assert key_spend(site, key) == spent  # nothing more was served or billed
    usage = http("GET", f"{one.url}/v1/usage", headers=one.auth(key)).json()
    assert usage["object"] == "page" and usage["budget"]["key"]["budgets"]["total"]["remaining"]["value"] == "0"


def test_two_gateways_on_one_ledger_hold_one_budget(site, pair):
    """Concurrent streams through both gateways: once the budget is spent neither serves
    the key, and spend passes the budget by at most the requests that were in flight."""
    one, two = pair
    max_tokens = 16
    key = new_key(site, "shared", "--group", "shared-budget")
    keys(site, "group", "shared-budget", "--budget-day", "0.00002", "--concurrent", "2")
    time.sleep(LIMITS_SETTLE)

    def ask(i: int) -> int:
        return chat((one, two)[i % 2], key, max_tokens=max_tokens, stream=True).status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(ask, range(60)))
    assert 200 in codes and 429 in codes
    time.sleep(LIMITS_SETTLE)
    for gw in (one, two):
        refused = chat(gw, key)
        assert refused.status_code == 429 and error_of(refused)["code"] == "insufficient_quota"
    spent = key_spend(site, key)
    served = codes.count(200)
    per_request = spent / served
    budget = 20_000  # nanos
    # in flight when it ran out: 2 per gateway (the group's concurrency), and what each
    # admitted before its next read of the other's spend (refreshed every second)
    wait_for(lambda: key_spend(site, key) == spent, 10, "the ledger to settle")
    assert spent >= budget
    assert spent <= budget + 4 * per_request * 2, (spent, served, codes)
