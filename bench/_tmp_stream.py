#!/usr/bin/env python3
"""Gateway benchmark: the same load straight to vLLM, through `isense gateway`, and
through LiteLLM's proxy, all on one dev CPU vLLM.

    .venv/bin/python bench/gateway.py [--requests 2000] [--concurrency 16] [--max-tokens 4]

Starts what it needs (dev/vllm, the gateway with a throw-away ledger and key, dev/litellm)
and stops it afterwards. Load: OpenAI-style chat requests (small max_tokens, so that the
proxies' own cost shows) from an aiohttp client, non-streamed and streamed:
- added latency at concurrency 1, the three targets taken in turn request by request
  (whatever else runs on the host slows them alike): p50/p99 and their difference to
  direct;
- throughput at --concurrency with a fixed number of client tasks: requests/s, p50/p99,
  best of --rounds rounds for direct and the gateway (one round for LiteLLM, slow);
- the proxy's CPU seconds per request (from /proc: on a 2-core host the load generator,
  vLLM and the proxy share the CPU, so this is the fairer figure of a proxy's own cost)
  and, for the gateway, the ledger rows committed per second.
- the control plane under load (--control-plane-streams, default 32): a second dev vLLM
  joins, that many streams run back to back through the gateway against both, and a
  separate process probes GET /internal/workers, GET /health, POST heartbeat and POST
  register every 20 ms: p50/p99/max per endpoint (target: p99 <= 100 ms).
- with --limits, a fourth target `gw+lim`: the same gateway, with a key held to rpm,
  tpm, concurrency and a day budget that this load never reaches, so each request pays
  the whole limit check (summary keys gateway_limits_*). At concurrency 1 the gateway's
  CPU is shared by both of its targets, so both get the same CPU per request there.
Figures cover successful requests only; `errors` counts the failed ones, and the bench
exits 1 when any request or probe failed. The stand-in workers heartbeat like a worker
and register again at once when the gateway answers 404.
The last line of output is JSON with every figure.
"""

import argparse
import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

import stats  # noqa: E402
from gateway_control import StandIn, control_plane  # noqa: E402
from gateway_figures import add_latency, print_table, summarize  # noqa: E402
from gateway_load import chat_body, cpu_seconds, group_pids, report, run_load, run_paired  # noqa: E402
from isense_slurm.meter.ledger import Ledger  # noqa: E402
from isense_slurm.meter.limits import key_subject, set_limits  # noqa: E402
from isense_slurm.secrets import vllm_api_key  # noqa: E402
from waiting import free_port  # noqa: E402

JOB_ID = "bench-1"
JOB_ID_2 = "bench-2"
STATE_DIR = Path("/var/lib/isense-dev")
# --limits: a second key held to every kind of limit, none of which this load reaches,
# so each of its requests pays the whole check (rates, concurrency, day budget).
GENEROUS_LIMITS = {"rpm": 10**7, "tpm": 10**9, "concurrent": 10**4, "budget_day_nanos": 10**15}


# --- services ----------------------------------------------------------------------------


def sh(args: list[str], env: dict | None = None, timeout: float = 900) -> str:
    done = subprocess.run(args, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_http(url: str, headers: dict, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {url} not answering after {timeout:.0f} s") from None
            time.sleep(0.2)


def write_config(tmp: Path, gateway_port: int, serve: bool = False) -> Path:
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    lines = []
    section = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[ledger]" and stripped.startswith("path"):
            line = f'path = "{tmp / "ledger.db"}"'
        elif section == "[secrets]" and stripped.startswith("dir"):
            line = f'dir = "{tmp / "secrets"}"'
        elif section == "[gateway]" and stripped.startswith(("listen", "advertise_url")):
            key = stripped.split("=")[0].strip()
            line = f'{key} = "{"" if key == "listen" else "http://"}127.0.0.1:{gateway_port}"'
        elif serve and section == "[slurm]" and stripped.startswith("max_lend_share"):
            line = "max_lend_share = 0"  # the controller observes Slurm every tick but lends nothing
        elif serve and section == "[slurm]" and stripped.startswith("job_dir"):
            line = f'job_dir = "{tmp / "jobs"}"'
        lines.append(line)
    path = tmp / "isense.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def ledger_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM requests").fetchone()[0]


# --- the run, step by step ---------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per target at --concurrency")
    ap.add_argument("--latency-requests", type=int, default=300, help="requests per target at concurrency 1")
    ap.add_argument("--litellm-requests", type=int, help="requests for LiteLLM (default: --requests)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds of direct and gateway (best kept)")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (e.g. not installed)")
    ap.add_argument("--no-stream", action="store_true", help="non-streamed requests only")
    ap.add_argument(
        "--limits",
        action="store_true",
        help="also load the gateway with a key held to rate, concurrency and budget limits "
        "(target gw+lim): the limit check's cost, in the same run",
    )
    ap.add_argument(
        "--control-plane-streams",
        type=int,
        default=32,
        help="streams running against 2 vLLMs while the control plane is probed (0: skip)",
    )
    ap.add_argument("--control-plane-seconds", type=float, default=30)
    ap.add_argument(
        "--serve",
        action="store_true",
        help="run `isense serve` (gateway + controller on one loop, lending nothing, on the dev "
        "cluster) instead of `isense gateway`; the control plane probes also POST hook events",
    )
    return ap.parse_args()


@dataclass
class Run:
    """One bench run: its throw-away config, ledger and secret, and what it started."""

    tmp: Path
    secret_hex: str
    vllm_port: int
    gateway_port: int
    litellm_port: int
    cfg: Path = Path()
    client_key: str = ""
    limited_key: str = ""
    started: list[list[str]] = field(default_factory=list)  # commands that stop what was started
    gateway: subprocess.Popen | None = None
    stand_in: StandIn | None = None

    @property
    def secret(self) -> bytes:
        return self.secret_hex.encode()

    @property
    def vllm_key(self) -> str:
        return vllm_api_key(self.secret, JOB_ID)

    @property
    def gw_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"


def prepare(args: argparse.Namespace) -> Run:
    """A temp dir with the secret, the config and a ledger holding one client key."""
    tmp = Path(tempfile.mkdtemp(prefix="isense-bench-"))
    (tmp / "secrets").mkdir(mode=0o700)
    secret_hex = os.urandom(32).hex()
    (tmp / "secrets" / "worker.key").write_text(secret_hex + "\n")
    run = Run(tmp, secret_hex, free_port(), free_port(), free_port())
    if args.serve:
        sh([str(REPO / "dev/cluster"), "up"])
    run.cfg = write_config(tmp, run.gateway_port, serve=args.serve)
    with Ledger.open(tmp / "ledger.db") as ledger:
        _, run.client_key = ledger.create_key("bench")
        if args.limits:
            limited, run.limited_key = ledger.create_key("bench-limited")
            set_limits(ledger, key_subject(limited.id), GENEROUS_LIMITS)
    return run


def start_services(run: Run, args: argparse.Namespace) -> dict:
    """vLLM, the gateway (or isense serve) with a stand-in worker, and LiteLLM; the targets
    to load: name -> (URL, key, pids whose CPU counts)."""
    vllm_port, litellm_port = run.vllm_port, run.litellm_port
    print(f"bench: starting vLLM on :{vllm_port}", file=sys.stderr)
    sh([str(REPO / "dev/vllm"), "up", "--port", str(vllm_port)], {"ISENSE_DEV_VLLM_KEY": run.vllm_key})
    run.started.append([str(REPO / "dev/vllm"), "down", "--port", str(vllm_port)])

    print(f"bench: starting the gateway on :{run.gateway_port}", file=sys.stderr)
    gateway_log = open(run.tmp / "gateway.log", "wb")  # noqa: SIM115 - open for the gateway's life
    run.gateway = subprocess.Popen(
        [str(REPO / ".venv/bin/isense"), "--config", str(run.cfg), "serve" if args.serve else "gateway"],
        stdout=gateway_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_http(f"{run.gw_url}/v1/models", {"Authorization": f"Bearer {run.client_key}"})
    run.stand_in = StandIn(run.gw_url, run.secret, JOB_ID, f"http://127.0.0.1:{vllm_port}")

    targets = {
        "direct": (f"http://127.0.0.1:{vllm_port}/v1/chat/completions", run.vllm_key, []),
        "gateway": (f"{run.gw_url}/v1/chat/completions", run.client_key, [run.gateway.pid]),
    }
    if args.limits:
        targets["gw+lim"] = (f"{run.gw_url}/v1/chat/completions", run.limited_key, [run.gateway.pid])
    if not args.no_litellm:
        print(f"bench: starting LiteLLM on :{litellm_port}", file=sys.stderr)
        sh(
            [
                str(REPO / "dev/litellm"),
                "up",
                "--upstream",
                f"http://127.0.0.1:{vllm_port}",
                "--port",
                str(litellm_port),
            ],
            {"ISENSE_DEV_VLLM_KEY": run.vllm_key},
        )
        run.started.append([str(REPO / "dev/litellm"), "down", "--port", str(litellm_port)])
        litellm_key = (STATE_DIR / f"litellm-{litellm_port}.key").read_text().strip()
        litellm_pgid = int((STATE_DIR / f"litellm-{litellm_port}.pid").read_text())
        targets["litellm"] = (
            f"http://127.0.0.1:{litellm_port}/v1/chat/completions",
            litellm_key,
            group_pids(litellm_pgid),
        )
    return targets


def measure_paired(targets: dict, body: bytes, args: argparse.Namespace, stream: bool) -> list[dict]:
    """Added latency: concurrency 1, the targets in turn; CPU over this run per proxy."""
    results = []
    cpu0 = {name: cpu_seconds(pids) for name, (_, _, pids) in targets.items()}
    paired = asyncio.run(run_paired(targets, body, args.latency_requests, stream))
    for name, res in paired.items():
        res.update(target=name, stream=stream, concurrency=1)
        pids = targets[name][2]
        if pids:  # CPU over the paired run, per request of every target on the same process
            cpu = cpu_seconds(pids) - cpu0[name]
            requests = sum(paired[other]["requests"] for other, (_, _, p) in targets.items() if p == pids)
            res["proxy_cpu_ms_per_request"] = round(cpu / requests * 1000, 3)
        results.append(res)
        report(res)
    return results


def measure_throughput(run: Run, targets: dict, body: bytes, args: argparse.Namespace, stream: bool) -> list[dict]:
    """Throughput at --concurrency: the best of --rounds rounds per target."""
    best: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for name, (url, key, pids) in targets.items():
            if name == "litellm" and round_ > 0:
                continue  # slow: one round is enough to see its ceiling
            count = args.litellm_requests if name == "litellm" and args.litellm_requests else args.requests
            rows0 = ledger_rows(run.tmp / "ledger.db") if name == "gateway" else 0
            cpu0 = cpu_seconds(pids)
            res = asyncio.run(run_load(url, key, body, count, args.concurrency, stream))
            cpu = cpu_seconds(pids) - cpu0
            res.update(target=name, stream=stream, concurrency=args.concurrency)
            if pids:
                res["proxy_cpu_ms_per_request"] = round(cpu / count * 1000, 3)
            if name == "gateway":
                res["ledger_rows_per_s"] = round((ledger_rows(run.tmp / "ledger.db") - rows0) / res["wall_s"], 1)
            report(res)
            if name not in best or res["rps"] > best[name]["rps"]:
                best[name] = res
    return list(best.values())


def measure(run: Run, targets: dict, args: argparse.Namespace) -> list[dict]:
    results = []
    modes = [False] if args.no_stream else [True]
    for stream in modes:
        body = chat_body(args.max_tokens, stream)
        for _name, (url, key, _) in targets.items():  # warm up connections and caches
            asyncio.run(run_load(url, key, body, 50, args.concurrency, stream))
        results.extend(measure_paired(targets, body, args, stream))
        results.extend(measure_throughput(run, targets, body, args, stream))
    return results


def measure_control_plane(run: Run, args: argparse.Namespace) -> dict:
    """A second vLLM joins; the control plane is probed while streams run against both."""
    second_port = free_port()
    print(
        f"bench: control plane: a second vLLM on :{second_port}, "
        f"{args.control_plane_streams} streams for {args.control_plane_seconds:g} s",
        file=sys.stderr,
    )
    sh(
        [str(REPO / "dev/vllm"), "up", "--port", str(second_port)],
        {"ISENSE_DEV_VLLM_KEY": vllm_api_key(run.secret, JOB_ID_2)},
    )
    run.started.append([str(REPO / "dev/vllm"), "down", "--port", str(second_port)])
    second = StandIn(run.gw_url, run.secret, JOB_ID_2, f"http://127.0.0.1:{second_port}")
    control = control_plane(
        run.gw_url,
        run.client_key,
        run.secret_hex,
        second.registration,
        streams=args.control_plane_streams,
        seconds=args.control_plane_seconds,
        max_tokens=64,
        events=args.serve,
    )
    second.stop()
    print(
        f"bench: control plane under {control['streams']} streams: p99 {control['p99_ms']} ms, "
        f"max {control['max_ms']} ms, errors {control['errors']}",
        file=sys.stderr,
    )
    return control


def stop_services(run: Run) -> None:
    if run.gateway is not None:
        run.gateway.terminate()
        try:
            run.gateway.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.gateway.kill()
    for cmd in reversed(run.started):
        subprocess.run(cmd, capture_output=True, timeout=120)


def main() -> int:
    args = parse_args()
    run = prepare(args)
    control = None
    try:
        targets = start_services(run, args)
        results = measure(run, targets, args)
        if args.control_plane_streams:
            control = measure_control_plane(run, args)
        run.stand_in.stop()
    finally:
        stop_services(run)
    add_latency(results)
    print_table(results)
    summary, errors = summarize(args, results, control, run.stand_in)
    if errors:
        print(f"bench: {errors} request(s) failed: the figures cover successful ones only", file=sys.stderr)
    return stats.finish(summary, errors)


if __name__ == "__main__":
    sys.exit(stats.guarded("gateway", main))
