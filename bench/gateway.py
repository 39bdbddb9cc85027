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
Figures cover successful requests only; `errors` counts the failed ones, and the bench
exits 1 when any request or probe failed. The stand-in workers heartbeat like a worker
and register again at once when the gateway answers 404.
The last line of output is JSON with every figure.
"""

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from isense_slurm.secrets import hook_token, vllm_api_key, worker_token  # noqa: E402
from waiting import free_port  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
import stats  # noqa: E402

MODEL = "tiny-llama"
JOB_ID = "bench-1"
JOB_ID_2 = "bench-2"
STATE_DIR = Path("/var/lib/isense-dev")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    """bench/stats.percentile, NaN for no samples (a column of the table, not a figure)."""
    return stats.percentile(values, q) if values else float("nan")


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return pids


# --- load ------------------------------------------------------------------------------


async def run_load(url: str, key: str, body: bytes, n: int, concurrency: int, stream: bool) -> dict:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def worker() -> None:
            nonlocal issued
            while issued < n:
                issued += 1
                t0 = time.perf_counter()
                error = await post_once(session, url, body, headers, stream)
                if error:
                    errors.append(error)
                else:  # figures over successful requests only
                    latencies.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "requests": n,
        "ok": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 3),
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


async def post_once(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict,
                    stream: bool) -> str | None:
    """One request; None when it succeeded (200, and a stream that ended with [DONE]),
    else what went wrong."""
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            data = await resp.read()
            if resp.status != 200:
                return f"HTTP {resp.status}: {data[:120]!r}"
            if stream and not data.rstrip().endswith(b"data: [DONE]"):
                return "stream without [DONE]"
            if stream and b'"error"' in data:
                return "stream with an error event"
            return None
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        return type(err).__name__


async def run_paired(targets: dict, body: bytes, n: int, stream: bool) -> dict[str, dict]:
    """Concurrency 1, the targets taken in turn request by request, so that whatever
    else runs on the host slows them alike: the fairest view of added latency."""
    lat: dict[str, list[float]] = {name: [] for name in targets}
    errors: dict[str, int] = {name: 0 for name in targets}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for _ in range(n):
            for name, (url, key, _pids) in targets.items():
                headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
                t0 = time.perf_counter()
                if await post_once(session, url, body, headers, stream):
                    errors[name] += 1
                else:  # figures over successful requests only
                    lat[name].append(time.perf_counter() - t0)
    out = {}
    for name, values in lat.items():
        values.sort()
        out[name] = {
            "requests": n,
            "ok": len(values),
            "errors": errors[name],
            "rps": round(1 / (sum(values) / len(values)), 1) if values else 0.0,
            "p50_ms": round(percentile(values, 0.50) * 1000, 3),
            "p99_ms": round(percentile(values, 0.99) * 1000, 3),
        }
    return out


def chat_body(max_tokens: int, stream: bool) -> bytes:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something about the sea."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


class StandIn:
    """The bench registers a dev vLLM by hand, so it also does what a worker does to stay
    registered: heartbeat, and register again at once when the gateway answers 404."""

    def __init__(self, gateway_url: str, secret: bytes, job_id: str, vllm_url: str):
        self.base = f"{gateway_url}/internal/workers"
        self.token = worker_token(secret, job_id)
        self.job_id = job_id
        self.registration = {"job_id": job_id, "node": "bench", "gpus": "0", "model": MODEL, "url": vllm_url}
        self.reregistered = 0
        self.heartbeat_failures = 0
        self._stop = threading.Event()
        self.register()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()

    def register(self) -> None:
        post_json(f"{self.base}/register", self.registration, self.token)

    def _beat(self) -> None:
        import urllib.error

        while not self._stop.wait(3.0):
            try:
                post_json(f"{self.base}/heartbeat", {"job_id": self.job_id}, self.token)
            except urllib.error.HTTPError as err:
                if err.code != 404:
                    self.heartbeat_failures += 1
                    print(f"bench: heartbeat of {self.job_id} answered {err.code}", file=sys.stderr)
                    continue
                self.reregistered += 1
                print(f"bench: the gateway forgot {self.job_id}; registering again", file=sys.stderr)
                try:
                    self.register()
                except OSError as err2:
                    print(f"bench: registering {self.job_id} again failed: {err2}", file=sys.stderr)
            except OSError as err:
                self.heartbeat_failures += 1
                print(f"bench: heartbeat of {self.job_id} failed: {err}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()


# --- control plane under load -----------------------------------------------------------

PROBES = ("registry", "health", "heartbeat", "register")
EVENT_NODE = "n1"


def probe_control_plane(gw_url: str, secret_hex: str, registration: dict, seconds: float,
                        interval: float, out, events: bool = False) -> None:
    """In a process of its own (so the load generator's GIL does not count): hit each
    control-plane endpoint in turn every `interval` s for `seconds`; put
    {probe: [latency s or None for a failure]} on `out`."""
    import urllib.error

    token = worker_token(secret_hex.encode(), registration["job_id"])
    base = f"{gw_url}/internal/workers"
    calls = {
        "registry": lambda: get_json(base),
        "health": lambda: get_json(f"{gw_url}/health"),
        "heartbeat": lambda: post_json(f"{base}/heartbeat", {"job_id": registration["job_id"]}, token),
        "register": lambda: post_json(f"{base}/register", registration, token),
        # The daemon's hook intake: a node's epilog saying its GPUs are free.
        "events": lambda: post_json(f"{gw_url}/internal/events", {
            "kind": "gpus_free", "node": EVENT_NODE, "gpus": [], "time": time.time(), "job_id": ""},
            hook_token(secret_hex.encode(), EVENT_NODE)),
    }
    probes = PROBES + (("events",) if events else ())
    lat: dict[str, list] = {name: [] for name in probes}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for name in probes:
            t0 = time.perf_counter()
            try:
                calls[name]()
                lat[name].append(time.perf_counter() - t0)
            except (urllib.error.URLError, OSError):
                lat[name].append(None)
            time.sleep(interval)
    out.put(lat)


async def stream_load(url: str, key: str, body: bytes, clients: int, seconds: float) -> dict:
    """`clients` streams back to back for `seconds`: the load the control plane must
    answer under."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    done, errors = 0, []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients),
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def client() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                error = await post_once(session, url, body, headers, True)
                if error:
                    errors.append(error)
                else:
                    done += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return {"streams_ok": done, "errors": len(errors), "first_error": errors[0] if errors else None}


def control_plane(gw_url: str, client_key: str, secret_hex: str, registration: dict, *,
                  streams: int, seconds: float, max_tokens: int, events: bool = False) -> dict:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    prober = ctx.Process(target=probe_control_plane,
                         args=(gw_url, secret_hex, registration, seconds, 0.02, out, events))
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}],
                       "max_tokens": max_tokens, "stream": True, "ignore_eos": True}).encode()
    prober.start()
    load = asyncio.run(stream_load(f"{gw_url}/v1/chat/completions", client_key, body, streams, seconds + 2))
    lat = out.get(timeout=120)
    prober.join(30)
    res = {"streams": streams, "seconds": seconds, **load}
    all_ok: list[float] = []
    for name in lat:
        ok = sorted(v for v in lat[name] if v is not None)
        failed = sum(v is None for v in lat[name])
        res["errors"] += failed
        all_ok += ok
        res[name] = {"probes": len(lat[name]), "errors": failed,
                     "p50_ms": round(percentile(ok, 0.5) * 1000, 2),
                     "p99_ms": round(percentile(ok, 0.99) * 1000, 2),
                     "max_ms": round(ok[-1] * 1000, 2) if ok else None}
    all_ok.sort()
    res["p99_ms"] = round(percentile(all_ok, 0.99) * 1000, 2)
    res["max_ms"] = round(all_ok[-1] * 1000, 2) if all_ok else None
    return res


def get_json(url: str):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


# --- services ----------------------------------------------------------------------------


def sh(args: list[str], env: dict | None = None, timeout: float = 900) -> str:
    done = subprocess.run(args, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def wait_http(url: str, headers: dict, timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: {url} not answering after {timeout:.0f} s")
            time.sleep(0.2)


def post_json(url: str, payload: dict, token: str) -> None:
    import urllib.request

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


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


def report(res: dict) -> None:
    print(f"bench: {res['target']:8s} stream={res['stream']!s:5s} c={res['concurrency']:<3d} "
          f"{res['rps']:8.1f} req/s p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms "
          f"errors {res['errors']}", file=sys.stderr)


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per target at --concurrency")
    ap.add_argument("--latency-requests", type=int, default=300, help="requests per target at concurrency 1")
    ap.add_argument("--litellm-requests", type=int, help="requests for LiteLLM (default: --requests)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds of direct and gateway (best kept)")
    ap.add_argument("--no-litellm", action="store_true", help="skip LiteLLM (e.g. not installed)")
    ap.add_argument("--no-stream", action="store_true", help="non-streamed requests only")
    ap.add_argument("--control-plane-streams", type=int, default=32,
                    help="streams running against 2 vLLMs while the control plane is probed (0: skip)")
    ap.add_argument("--control-plane-seconds", type=float, default=30)
    ap.add_argument("--serve", action="store_true",
                    help="run `isense serve` (gateway + controller on one loop, lending nothing, on the dev "
                         "cluster) instead of `isense gateway`; the control plane probes also POST hook events")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="isense-bench-"))
    (tmp / "secrets").mkdir(mode=0o700)
    secret_hex = os.urandom(32).hex()
    (tmp / "secrets" / "worker.key").write_text(secret_hex + "\n")
    secret = secret_hex.encode()
    vllm_port, gateway_port, litellm_port = free_port(), free_port(), free_port()
    vllm_key = vllm_api_key(secret, JOB_ID)
    if args.serve:
        sh([str(REPO / "dev/cluster"), "up"])
    cfg = write_config(tmp, gateway_port, serve=args.serve)

    from isense_slurm.meter.ledger import Ledger

    with Ledger.open(tmp / "ledger.db") as ledger:
        _, client_key = ledger.create_key("bench")

    started: list[list[str]] = []
    gateway = None
    control = stand_in = None
    try:
        print(f"bench: starting vLLM on :{vllm_port}", file=sys.stderr)
        sh([str(REPO / "dev/vllm"), "up", "--port", str(vllm_port)], {"ISENSE_DEV_VLLM_KEY": vllm_key})
        started.append([str(REPO / "dev/vllm"), "down", "--port", str(vllm_port)])

        print(f"bench: starting the gateway on :{gateway_port}", file=sys.stderr)
        gateway_log = open(tmp / "gateway.log", "wb")
        gateway = subprocess.Popen(
            [str(REPO / ".venv/bin/isense"), "--config", str(cfg), "serve" if args.serve else "gateway"],
            stdout=gateway_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        gw_url = f"http://127.0.0.1:{gateway_port}"
        wait_http(f"{gw_url}/v1/models", {"Authorization": f"Bearer {client_key}"})
        stand_in = StandIn(gw_url, secret, JOB_ID, f"http://127.0.0.1:{vllm_port}")

        targets = {
            "direct": (f"http://127.0.0.1:{vllm_port}/v1/chat/completions", vllm_key, []),
            "gateway": (f"{gw_url}/v1/chat/completions", client_key, [gateway.pid]),
        }
        if not args.no_litellm:
            print(f"bench: starting LiteLLM on :{litellm_port}", file=sys.stderr)
            sh([str(REPO / "dev/litellm"), "up", "--upstream", f"http://127.0.0.1:{vllm_port}",
                "--port", str(litellm_port)], {"ISENSE_DEV_VLLM_KEY": vllm_key})
            started.append([str(REPO / "dev/litellm"), "down", "--port", str(litellm_port)])
            litellm_key = (STATE_DIR / f"litellm-{litellm_port}.key").read_text().strip()
            litellm_pgid = int((STATE_DIR / f"litellm-{litellm_port}.pid").read_text())
            targets["litellm"] = (f"http://127.0.0.1:{litellm_port}/v1/chat/completions", litellm_key,
                                  group_pids(litellm_pgid))

        results = []
        modes = [False] if args.no_stream else [False, True]
        for stream in modes:
            body = chat_body(args.max_tokens, stream)
            for name, (url, key, _) in targets.items():  # warm up connections and caches
                asyncio.run(run_load(url, key, body, 50, args.concurrency, stream))
            cpu0 = {name: cpu_seconds(pids) for name, (_, _, pids) in targets.items()}
            paired = asyncio.run(run_paired(targets, body, args.latency_requests, stream))
            for name, res in paired.items():
                res.update(target=name, stream=stream, concurrency=1)
                if targets[name][2]:  # CPU over the paired run: only this target's requests reach it
                    cpu = cpu_seconds(targets[name][2]) - cpu0[name]
                    res["proxy_cpu_ms_per_request"] = round(cpu / res["requests"] * 1000, 3)
                results.append(res)
                report(res)
            best: dict[str, dict] = {}
            for round_ in range(args.rounds):
                for name, (url, key, pids) in targets.items():
                    if name == "litellm" and round_ > 0:
                        continue  # slow: one round is enough to see its ceiling
                    count = args.litellm_requests if name == "litellm" and args.litellm_requests else args.requests
                    rows0 = ledger_rows(tmp / "ledger.db") if name == "gateway" else 0
                    cpu0 = cpu_seconds(pids)
                    res = asyncio.run(run_load(url, key, body, count, args.concurrency, stream))
                    cpu = cpu_seconds(pids) - cpu0
                    res.update(target=name, stream=stream, concurrency=args.concurrency)
                    if pids:
                        res["proxy_cpu_ms_per_request"] = round(cpu / count * 1000, 3)
                    if name == "gateway":
                        res["ledger_rows_per_s"] = round((ledger_rows(tmp / "ledger.db") - rows0) / res["wall_s"], 1)
                    report(res)
                    if name not in best or res["rps"] > best[name]["rps"]:
                        best[name] = res
            results.extend(best.values())
        if args.control_plane_streams:
            second_port = free_port()
            print(f"bench: control plane: a second vLLM on :{second_port}, "
                  f"{args.control_plane_streams} streams for {args.control_plane_seconds:g} s", file=sys.stderr)
            sh([str(REPO / "dev/vllm"), "up", "--port", str(second_port)],
               {"ISENSE_DEV_VLLM_KEY": vllm_api_key(secret, JOB_ID_2)})
            started.append([str(REPO / "dev/vllm"), "down", "--port", str(second_port)])
            second = StandIn(gw_url, secret, JOB_ID_2, f"http://127.0.0.1:{second_port}")
            control = control_plane(gw_url, client_key, secret_hex, second.registration,
                                    streams=args.control_plane_streams, seconds=args.control_plane_seconds,
                                    max_tokens=64, events=args.serve)
            second.stop()
            print(f"bench: control plane under {control['streams']} streams: p99 {control['p99_ms']} ms, "
                  f"max {control['max_ms']} ms, errors {control['errors']}", file=sys.stderr)
        stand_in.stop()
    finally:
        if gateway is not None:
            gateway.terminate()
            try:
                gateway.wait(timeout=30)
            except subprocess.TimeoutExpired:
                gateway.kill()
        for cmd in reversed(started):
            subprocess.run(cmd, capture_output=True, timeout=120)

    # Added latency = the target's percentile minus direct's, same stream mode and concurrency.
    direct = {(r["stream"], r["concurrency"]): r for r in results if r["target"] == "direct"}
    for r in results:
        base = direct[(r["stream"], r["concurrency"])]
        r["added_p50_ms"] = round(r["p50_ms"] - base["p50_ms"], 3)
        r["added_p99_ms"] = round(r["p99_ms"] - base["p99_ms"], 3)

    header = f"{'TARGET':8} {'STREAM':6} {'C':>3} {'REQ/S':>8} {'P50MS':>8} {'P99MS':>8} " \
             f"{'+P50MS':>8} {'+P99MS':>8} {'CPUMS/REQ':>9} {'ROWS/S':>8} {'ERR':>4}"
    print(header)
    for r in results:
        print(f"{r['target']:8} {'yes' if r['stream'] else 'no':6} {r['concurrency']:>3} {r['rps']:>8.1f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['added_p50_ms']:>8.2f} {r['added_p99_ms']:>8.2f} "
              f"{r.get('proxy_cpu_ms_per_request', float('nan')):>9.3f} "
              f"{r.get('ledger_rows_per_s', float('nan')):>8.1f} {r['errors']:>4}")
    summary = {"server": "isense serve" if args.serve else "isense gateway", "max_tokens": args.max_tokens,
               "concurrency": args.concurrency, "results": results}
    errors = sum(r["errors"] for r in results)
    if control is not None:
        summary["control_plane"] = control
        summary["control_plane_p99_ms"] = control["p99_ms"]
        errors += control["errors"]
    summary["errors"] = errors
    summary["reregistered"] = stand_in.reregistered if stand_in else 0
    gw = {(r["stream"], r["concurrency"]): r for r in results if r["target"] == "gateway"}
    ll = {(r["stream"], r["concurrency"]): r for r in results if r["target"] == "litellm"}
    for key, r in gw.items():
        tag = f"{'stream' if key[0] else 'plain'}_c{key[1]}"
        summary[f"gateway_added_p50_ms_{tag}"] = r["added_p50_ms"]
        if key in ll and ll[key]["rps"]:
            summary[f"gateway_vs_litellm_rps_{tag}"] = round(r["rps"] / ll[key]["rps"], 2)
    if errors:
        print(f"bench: {errors} request(s) failed: the figures cover successful ones only", file=sys.stderr)
    summary.pop("errors")
    return stats.finish(summary, errors)


if __name__ == "__main__":
    sys.exit(stats.guarded("gateway", main))
