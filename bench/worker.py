#!/usr/bin/env python3
"""Worker lifecycle benchmark: `isense worker` on the dev CPU vLLM.

    .venv/bin/python bench/worker.py [--runs 2] [--max-tokens 400]

Per run and scenario it starts a worker outside Slurm against a small recording HTTP
control plane (the gateway's /internal/workers/* endpoints) and measures:
  start_to_registered_s  worker launch -> register request received
  sigterm_to_exit_s      SIGTERM -> worker process gone (the dev cluster's KillWait is 5 s)
  sigterm_to_dereg_s     SIGTERM -> deregister request received
Scenarios: idle; busy (16 streams in vLLM when the worker gets SIGTERM; drain
budget [slurm] drain_seconds of dev/isense.dev.toml); nodrain (busy with drain_seconds
= 0.05: vLLM aborts them); slurm (busy, but SIGTERM goes to the worker and every descendant
at once, as Slurm's process tracking does on preemption or time limit). For the busy
ones it counts the clients' finish reasons and errors. The last line of output is JSON
with every figure.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from isense_slurm.secrets import create_secret, load_secret, vllm_api_key  # noqa: E402
from waiting import free_port  # noqa: E402

MODEL = "tiny-llama"
ISENSE = Path(sys.executable).with_name("isense")
SCENARIOS = ("idle", "busy", "nodrain", "slurm")


RECORDER = r"""
import asyncio, json, sys, time
from aiohttp import web
async def handle(request):
    body = await request.json()
    print(json.dumps([time.monotonic(), request.match_info["action"], body]), flush=True)
    return web.json_response({"ok": True})
app = web.Application()
app.router.add_post("/internal/workers/{action}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


class Recorder:
    """The gateway's /internal/workers/* endpoints, answering 200 and recording each call
    (monotonic time, action, body). Its own process: the bench's 16 client threads must
    not delay it (CLOCK_MONOTONIC is the same for every process)."""

    def __init__(self):
        self.calls: list[tuple[float, str, dict]] = []
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", RECORDER, str(self.port)],
                                     stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _read(self):
        for line in self.proc.stdout:
            self.calls.append(tuple(json.loads(line)))

    def first(self, action: str) -> tuple[float, str, dict] | None:
        return next((c for c in self.calls if c[1] == action), None)

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def server_load(url: str) -> int:
    import urllib.request
    return json.loads(urllib.request.urlopen(url + "/load", timeout=5).read())["server_load"]


def run_once(scenario: str, configs: dict, secret: bytes, max_tokens: int) -> dict:
    config = configs["nodrain" if scenario == "nodrain" else "dev"]
    import openai

    rec = Recorder()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    log_path = config.parent / f"worker-{scenario}-{time.monotonic_ns()}.stderr"
    with open(log_path, "w+b") as err:
        t_launch = time.monotonic()
        proc = subprocess.Popen([str(ISENSE), "--config", str(config), "worker", "--model", MODEL,
                                 "--gateway", f"http://127.0.0.1:{rec.port}"],
                                env=env, stdout=subprocess.DEVNULL, stderr=err)
        while rec.first("register") is None:
            if proc.poll() is not None:
                err.seek(0)
                sys.exit(f"worker exited {proc.returncode}:\n{err.read().decode()}")
            time.sleep(0.02)
        t_reg, _, body = rec.first("register")
        result = {"scenario": scenario, "start_to_registered_s": round(t_reg - t_launch, 2)}
        time.sleep(1.0)  # a heartbeat or two

        outcomes: list[str] = []
        threads = []
        if scenario != "idle":
            key = vllm_api_key(secret, body["job_id"])
            streaming = threading.Semaphore(0)

            def ask():
                with openai.OpenAI(base_url=body["url"] + "/v1", api_key=key, max_retries=0,
                                   timeout=60) as c:
                    finish, first = None, True
                    try:
                        for chunk in c.completions.create(
                                model=MODEL, prompt="Once upon a time", max_tokens=max_tokens,
                                stream=True, extra_body={"ignore_eos": True}):
                            if first:
                                streaming.release()
                                first = False
                            if chunk.choices and chunk.choices[0].finish_reason:
                                finish = chunk.choices[0].finish_reason
                        outcomes.append(str(finish))
                    except Exception as e:  # noqa: BLE001 - counted
                        outcomes.append(f"error:{type(e).__name__}")
                    if first:
                        streaming.release()

            threads = [threading.Thread(target=ask) for _ in range(16)]
            for t in threads:
                t.start()
            # All 16 requests accepted by vLLM (its GET /load) and one stream producing:
            # what the worker faces when the gateway has stopped sending it new requests.
            streaming.acquire(timeout=60)
            deadline = time.monotonic() + 10
            while (load := server_load(body["url"])) < 16 and time.monotonic() < deadline:
                time.sleep(0.005)
            result["in_flight_at_signal"] = load

        targets = descendants(proc.pid) if scenario == "slurm" else [proc.pid]
        t_sig = time.monotonic()
        for pid in targets:
            os.kill(pid, signal.SIGTERM)
        rc = proc.wait(timeout=60)
        t_exit = time.monotonic()
        for t in threads:
            t.join(60)
        dereg = rec.first("deregister")
        result.update({
            "sigterm_to_exit_s": round(t_exit - t_sig, 3),
            "sigterm_to_dereg_s": round(dereg[0] - t_sig, 4) if dereg else None,
            "exit_code": rc,
        })
        if threads:
            result["finish"] = {k: outcomes.count(k) for k in sorted(set(outcomes))}
        err.seek(0)
        log = err.read().decode()
        drained = re.search(r"(no request in flight|not serving|in flight; aborting)", log)
        result["drain_end"] = drained.group(1) if drained else None
        result["log"] = str(log_path)
        rec.close()
        return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=480)  # max_model_len is 512
    args = ap.parse_args()
    if not Path("/opt/isense/vllm-venv/bin/vllm").exists():
        sys.exit("bench/worker.py: run dev/vllm-setup and dev/make-tiny-model first")

    tmp = Path(tempfile.mkdtemp(prefix="isense-bench-worker-"))
    create_secret(tmp / "secrets")
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    text = re.sub(r'(?m)^dir = ".*"$', f'dir = "{tmp / "secrets"}"', text)
    configs = {"dev": tmp / "isense.toml", "nodrain": tmp / "isense-nodrain.toml"}
    configs["dev"].write_text(text)
    configs["nodrain"].write_text(re.sub(r"(?m)^drain_seconds = .*$", "drain_seconds = 0.05", text))
    secret = load_secret(tmp / "secrets")
    drain = re.search(r"(?m)^drain_seconds = (.*)$", text).group(1)
    print(f"dev config drain_seconds = {drain}; 'nodrain' uses 0.05", flush=True)

    results = []
    for run in range(args.runs):
        for scenario in SCENARIOS:
            r = run_once(scenario, configs, secret, args.max_tokens)
            print(f"run {run + 1} {scenario:5}: " + ", ".join(f"{k}={v}" for k, v in r.items()
                                                           if k not in ("scenario", "log")), flush=True)
            if r["sigterm_to_exit_s"] > 1.5:
                print(f"  slow stop: see {r['log']}", flush=True)
            results.append(r)

    def med(scenario, key):
        vals = [r[key] for r in results if r["scenario"] == scenario and r[key] is not None]
        return round(statistics.median(vals), 3) if vals else None

    summary = {"runs": args.runs, "max_tokens": args.max_tokens,
               "start_to_registered_s_median": round(statistics.median(
                   r["start_to_registered_s"] for r in results), 2)}
    for scenario in SCENARIOS:
        summary[f"{scenario}_sigterm_to_exit_s_median"] = med(scenario, "sigterm_to_exit_s")
        summary[f"{scenario}_sigterm_to_dereg_s_median"] = med(scenario, "sigterm_to_dereg_s")
    for scenario in SCENARIOS[1:]:
        finish: dict[str, int] = {}
        for r in results:
            if r["scenario"] == scenario:
                for k, v in r["finish"].items():
                    finish[k] = finish.get(k, 0) + v
        summary[f"{scenario}_finish"] = finish
    summary["exit_codes"] = sorted({r["exit_code"] for r in results})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
