"""The gateway bench's load: OpenAI-style chat requests from an aiohttp client, at a
fixed concurrency or paired request by request across targets, and the CPU seconds a
proxy spends on them (from /proc)."""

import asyncio
import json
import os
import sys
import time

import aiohttp

import stats

MODEL = "tiny-llama"
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


async def post_once(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict, stream: bool) -> str | None:
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
    except (TimeoutError, aiohttp.ClientError) as err:
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


def report(res: dict) -> None:
    print(
        f"bench: {res['target']:8s} stream={res['stream']!s:5s} c={res['concurrency']:<3d} "
        f"{res['rps']:8.1f} req/s p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms "
        f"errors {res['errors']}",
        file=sys.stderr,
    )
