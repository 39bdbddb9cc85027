"""The gateway bench's control plane: stand-in workers that stay registered like a
worker does, and the probes of the control-plane endpoints while streams run.

probe_control_plane runs in a spawned process: it is imported there by module name
(bench/ is on the sys.path the parent hands down)."""

import asyncio
import json
import multiprocessing
import sys
import threading
import time
import urllib.error
import urllib.request

import aiohttp

from gateway_load import MODEL, percentile, post_once
from isense_slurm.secrets import hook_token, worker_token

PROBES = ("registry", "health", "heartbeat", "register")
EVENT_NODE = "n1"


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


def probe_control_plane(
    gw_url: str, secret_hex: str, registration: dict, seconds: float, interval: float, out, events: bool = False
) -> None:
    """In a process of its own (so the load generator's GIL does not count): hit each
    control-plane endpoint in turn every `interval` s for `seconds`; put
    {probe: [latency s or None for a failure]} on `out`."""
    token = worker_token(secret_hex.encode(), registration["job_id"])
    base = f"{gw_url}/internal/workers"
    calls = {
        "registry": lambda: get_json(base),
        "health": lambda: get_json(f"{gw_url}/health"),
        "heartbeat": lambda: post_json(f"{base}/heartbeat", {"job_id": registration["job_id"]}, token),
        "register": lambda: post_json(f"{base}/register", registration, token),
        # The daemon's hook intake: a node's epilog saying its GPUs are free.
        "events": lambda: post_json(
            f"{gw_url}/internal/events",
            {"kind": "gpus_free", "node": EVENT_NODE, "gpus": [], "time": time.time(), "job_id": ""},
            hook_token(secret_hex.encode(), EVENT_NODE),
        ),
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
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients), timeout=aiohttp.ClientTimeout(total=300)
    ) as session:

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


def control_plane(
    gw_url: str,
    client_key: str,
    secret_hex: str,
    registration: dict,
    *,
    streams: int,
    seconds: float,
    max_tokens: int,
    events: bool = False,
) -> dict:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    prober = ctx.Process(
        target=probe_control_plane, args=(gw_url, secret_hex, registration, seconds, 0.02, out, events)
    )
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": max_tokens,
            "stream": True,
            "ignore_eos": True,
        }
    ).encode()
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
        res[name] = {
            "probes": len(lat[name]),
            "errors": failed,
            "p50_ms": round(percentile(ok, 0.5) * 1000, 2),
            "p99_ms": round(percentile(ok, 0.99) * 1000, 2),
            "max_ms": round(ok[-1] * 1000, 2) if ok else None,
        }
    all_ok.sort()
    res["p99_ms"] = round(percentile(all_ok, 0.99) * 1000, 2)
    res["max_ms"] = round(all_ok[-1] * 1000, 2) if all_ok else None
    return res


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def post_json(url: str, payload: dict, token: str) -> None:
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
