#!/usr/bin/env python3
"""Budget bench: one key's day budget under concurrent streamed traffic through two
`isense gateway` processes on one ledger, in front of one dev CPU vLLM.

    .venv/bin/python bench/budget.py [--budget 0.01] [--streams 8] [--gateways 2]

Clients stream chat completions (ignore_eos, so each answer has exactly --max-tokens
tokens) through the gateways in turn until each has been refused with
`insufficient_quota` three times in a row. Figures: the budget, what the ledger billed
the key (spent), the overshoot in money and in requests, the bound the operator guide
states for it (per process: the requests in flight plus those admitted before its next
read of the others' spend: a tenth of a second's worth near the budget's end, a
second's worth for a budget that lasts under three seconds), requests served and
refused.
Errors: any answer other than 200 or a 429 insufficient_quota, a stream without
[DONE], spend that never reached the budget, an overshoot above the bound. The last
line is JSON; exit 1 on errors.
"""

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

import stats  # noqa: E402
from gateway import JOB_ID, sh, wait_http, write_config  # noqa: E402
from gateway_control import MODEL, StandIn  # noqa: E402
from isense_slurm.gateway.gate import FAST_REFRESH_SECONDS, REFRESH_SECONDS  # noqa: E402
from isense_slurm.meter.ledger import Ledger  # noqa: E402
from isense_slurm.meter.limits import key_subject, set_limits  # noqa: E402
from isense_slurm.meter.money import NANOS_PER_UNIT  # noqa: E402
from isense_slurm.secrets import vllm_api_key  # noqa: E402
from waiting import free_port  # noqa: E402

REFUSALS_TO_STOP = 3


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--budget",
        type=float,
        default=0.01,
        help="the key's day budget (about 10 s of this traffic), in the ledger's currency",
    )
    ap.add_argument("--streams", type=int, default=8, help="concurrent client streams, over all gateways")
    ap.add_argument("--gateways", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=600, help="seconds before the run is called failed")
    return ap.parse_args()


@dataclass
class Tally:
    served: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)
    first_refusal_s: float | None = None


@dataclass
class Site:
    tmp: Path
    secret: bytes
    key: str = ""
    key_id: int = 0
    urls: list[str] = field(default_factory=list)
    started: list[subprocess.Popen] = field(default_factory=list)
    stand_ins: list[StandIn] = field(default_factory=list)
    vllm_port: int = 0


def prepare(args: argparse.Namespace) -> Site:
    tmp = Path(tempfile.mkdtemp(prefix="isense-bench-budget-"))
    (tmp / "secrets").mkdir(mode=0o700)
    secret_hex = os.urandom(32).hex()
    (tmp / "secrets" / "worker.key").write_text(secret_hex + "\n")
    site = Site(tmp, secret_hex.encode(), vllm_port=free_port())
    with Ledger.open(tmp / "ledger.db") as ledger:
        info, site.key = ledger.create_key("bench-budget")
        site.key_id = info.id
        set_limits(ledger, key_subject(info.id), {"budget_day_nanos": round(args.budget * NANOS_PER_UNIT)})
    return site


def start(site: Site, args: argparse.Namespace) -> None:
    """The dev vLLM, then the gateways on one ledger, each with the vLLM registered."""
    vllm_key = vllm_api_key(site.secret, JOB_ID)
    sh([str(REPO / "dev/vllm"), "up", "--port", str(site.vllm_port)], {"ISENSE_DEV_VLLM_KEY": vllm_key})
    for i in range(args.gateways):
        port = free_port()
        folder = site.tmp / f"gw{i}"
        folder.mkdir()
        cfg = write_config(site.tmp, port)
        cfg = cfg.rename(folder / "isense.toml")
        log = open(folder / "gateway.log", "wb")  # noqa: SIM115 - open for the gateway's life
        site.started.append(
            subprocess.Popen(
                [str(REPO / ".venv/bin/isense"), "--config", str(cfg), "gateway"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/v1/models", {"Authorization": f"Bearer {site.key}"})
        site.stand_ins.append(StandIn(url, site.secret, JOB_ID, f"http://127.0.0.1:{site.vllm_port}"))
        site.urls.append(url)


def stop(site: Site) -> None:
    for stand_in in site.stand_ins:
        stand_in.stop()
    for proc in site.started:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    sh([str(REPO / "dev/vllm"), "down", "--port", str(site.vllm_port)])


async def client(session: aiohttp.ClientSession, site: Site, n: int, body: bytes, tally: Tally, t0: float) -> None:
    """Streams through the gateways in turn until refused for the budget three times running."""
    headers = {"Authorization": f"Bearer {site.key}", "Content-Type": "application/json"}
    refusals, i = 0, n
    while refusals < REFUSALS_TO_STOP:
        url = site.urls[i % len(site.urls)] + "/v1/chat/completions"
        i += 1
        async with session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
        if resp.status == 200 and data.rstrip().endswith(b"data: [DONE]") and b'"error"' not in data:
            tally.served += 1
            refusals = 0
        elif resp.status == 429 and json.loads(data).get("error", {}).get("code") == "insufficient_quota":
            tally.refused += 1
            refusals += 1
            if tally.first_refusal_s is None:
                tally.first_refusal_s = time.monotonic() - t0
        else:
            tally.failures.append(f"HTTP {resp.status}: {data[:120]!r}")
            refusals += 1  # a broken site must not loop forever


async def load(site: Site, args: argparse.Namespace) -> tuple[Tally, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count to twenty."}],
        "max_tokens": args.max_tokens,
        "stream": True,
        "ignore_eos": True,
    }
    payload, tally = json.dumps(body).encode(), Tally()
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.wait_for(
            asyncio.gather(*(client(session, site, n, payload, tally, t0) for n in range(args.streams))),
            args.timeout,
        )
    return tally, time.monotonic() - t0


def spent_nanos(ledger: Path, key_id: int) -> tuple[int, int]:
    """(gross billed to the key, its request rows), once the gateways flushed."""
    with sqlite3.connect(ledger) as db:
        row = db.execute("SELECT coalesce(sum(gross_nanos), 0), count(*) FROM requests WHERE key_id = ?", [key_id])
        gross, rows = row.fetchone()
    return int(gross), int(rows)


def figures(args: argparse.Namespace, site: Site, tally: Tally, wall: float) -> tuple[dict, list[str]]:
    budget = round(args.budget * NANOS_PER_UNIT)
    spent, rows = spent_nanos(site.tmp / "ledger.db", site.key_id)
    per_request = spent / max(1, tally.served)
    over_requests = max(0.0, (spent - budget) / per_request) if per_request else 0.0
    until_refused = tally.first_refusal_s or wall
    admitted_per_s = tally.served / max(until_refused, 1e-9)
    # A budget that lasts a few reads is read fast near its end; a shorter one only every second.
    refresh = FAST_REFRESH_SECONDS if until_refused > 3 * REFRESH_SECONDS else REFRESH_SECONDS
    bound = args.streams + args.gateways * admitted_per_s * refresh
    failures = list(tally.failures)
    if spent < budget:
        failures.append(f"spent {spent} nanos, under the budget {budget}: it never ran out")
    if over_requests > bound:
        failures.append(f"overshoot of {over_requests:.1f} requests passes the bound {bound:.1f}")
    if rows != tally.served:
        failures.append(f"the ledger billed {rows} requests, the clients received {tally.served}")
    out = {
        "bench": "budget",
        "gateways": args.gateways,
        "streams": args.streams,
        "max_tokens": args.max_tokens,
        "budget": args.budget,
        "spent": round(spent / NANOS_PER_UNIT, 9),
        "overshoot": round((spent - budget) / NANOS_PER_UNIT, 9),
        "overshoot_requests": round(over_requests, 1),
        "overshoot_bound_requests": round(bound, 1),
        "cost_per_request": round(per_request / NANOS_PER_UNIT, 9),
        "served": tally.served,
        "refused": tally.refused,
        "wall_s": round(wall, 1),
    }
    return out, failures


def main() -> int:
    args = parse_args()
    site = prepare(args)
    try:
        start(site, args)
        tally, wall = asyncio.run(load(site, args))
    finally:
        stop(site)
    out, failures = figures(args, site, tally, wall)
    print(
        f"budget {out['budget']}: spent {out['spent']} ({out['served']} served, {out['refused']} refused); "
        f"overshoot {out['overshoot']} = {out['overshoot_requests']} requests (bound {out['overshoot_bound_requests']})"
    )
    return stats.finish(out, len(failures), failures)


if __name__ == "__main__":
    sys.exit(stats.guarded("budget", main))
