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
ones it counts the clients' finish reasons. The last line of output is JSON with every
figure and `errors`: clients that got no answer (an exception, no finish reason, still
waiting), workers that exited non-zero, hung 60 s past SIGTERM or never deregistered,
no stream started within 60 s, fewer than 16 requests in flight at SIGTERM in a busy
scenario; a worker that never registers (300 s) ends the bench. Stop times are medians
over the runs without a failure; the exit status is non-zero when errors > 0.
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
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from isense_slurm.secrets import create_secret, load_secret, vllm_api_key  # noqa: E402
from stats import finish, guarded  # noqa: E402
from waiting import free_port  # noqa: E402

MODEL = "tiny-llama"
ISENSE = Path(sys.executable).with_name("isense")
SCENARIOS = ("idle", "busy", "nodrain", "slurm")
CLIENTS = 16  # streams in flight when the busy scenarios send SIGTERM
ANSWERS = ("length", "abort", "stop")  # a client answered; anything else is a failure
REGISTER_TIMEOUT_S = 300  # vLLM's start on 2 shared cores: 15-60 s


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
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(self.port)], stdout=subprocess.PIPE, text=True
        )
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
    return json.loads(urllib.request.urlopen(url + "/load", timeout=5).read())["server_load"]


def wait_registered(proc: subprocess.Popen, rec: Recorder, err, t_launch: float, log_path: Path) -> None:
    while rec.first("register") is None:
        if proc.poll() is not None:
            err.seek(0)
            raise RuntimeError(f"worker exited {proc.returncode} before registering:\n{err.read().decode()[-3000:]}")
        if time.monotonic() - t_launch > REGISTER_TIMEOUT_S:
            raise RuntimeError(f"worker not registered after {REGISTER_TIMEOUT_S} s; see {log_path}")
        time.sleep(0.02)


def ask(openai, url: str, key: str, max_tokens: int, streaming: threading.Semaphore, outcomes: list[str]) -> None:
    """One client's stream; its finish reason (or error) goes to `outcomes`, and
    `streaming` is released once it produced a token (or ended without one)."""
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60) as c:
        finish, first = None, True
        try:
            for chunk in c.completions.create(
                model=MODEL,
                prompt="Once upon a time",
                max_tokens=max_tokens,
                stream=True,
                extra_body={"ignore_eos": True},
            ):
                if first:
                    streaming.release()
                    first = False
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            outcomes.append(str(finish))
        except Exception as e:  # noqa: BLE001 - any client error is counted as a failure, not raised in the thread
            outcomes.append(f"error:{type(e).__name__}")
        if first:
            streaming.release()


def load_worker(
    openai, body: dict, secret: bytes, max_tokens: int, result: dict, failures: list[str], outcomes: list[str]
) -> list[threading.Thread]:
    """CLIENTS streams into the worker's vLLM, until all are in flight and one produces."""
    key = vllm_api_key(secret, body["job_id"])
    streaming = threading.Semaphore(0)
    threads = [
        threading.Thread(target=ask, args=(openai, body["url"], key, max_tokens, streaming, outcomes), daemon=True)
        for _ in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    # All requests accepted by vLLM (its GET /load) and one stream producing:
    # what the worker faces when the gateway has stopped sending it new requests.
    if not streaming.acquire(timeout=60):
        failures.append("no stream produced a token within 60 s")
    deadline = time.monotonic() + 10
    while (load := server_load(body["url"])) < CLIENTS and time.monotonic() < deadline:
        time.sleep(0.005)
    result["in_flight_at_signal"] = load
    if load < CLIENTS:  # what follows would time a lighter stop than the scenario's name says
        failures.append(f"only {load} of {CLIENTS} requests in flight at SIGTERM after 10 s")
    return threads


def stop_worker(
    proc: subprocess.Popen,
    scenario: str,
    rec: Recorder,
    threads: list[threading.Thread],
    result: dict,
    failures: list[str],
) -> None:
    """SIGTERM (to every descendant too in the slurm scenario); time the exit and the deregister."""
    targets = descendants(proc.pid) if scenario == "slurm" else [proc.pid]
    t_sig = time.monotonic()
    for pid in targets:
        os.kill(pid, signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
        t_exit = time.monotonic()
    except subprocess.TimeoutExpired:
        rc, t_exit = None, None
        failures.append("worker still running 60 s after SIGTERM")
    for t in threads:
        t.join(60)
    dereg = rec.first("deregister")
    if rc not in (0, None):
        failures.append(f"worker exited {rc}")
    if dereg is None:
        failures.append("worker never deregistered")
    result.update(
        {
            # Timed only when the worker stopped as it should (exit 0).
            "sigterm_to_exit_s": round(t_exit - t_sig, 3) if rc == 0 else None,
            "sigterm_to_dereg_s": round(dereg[0] - t_sig, 4) if dereg else None,
            "exit_code": rc,
        }
    )


def count_clients(threads: list[threading.Thread], outcomes: list[str], result: dict, failures: list[str]) -> None:
    answered = [o for o in outcomes if o in ANSWERS]
    result["finish"] = {k: answered.count(k) for k in sorted(set(answered))}
    wrong = [o for o in outcomes if o not in ANSWERS]
    unanswered = sum(t.is_alive() for t in threads)
    failures += [f"client: {o}" for o in wrong]
    failures += ["client still waiting 60 s after the worker's exit"] * unanswered
    result["client_failures"] = len(wrong) + unanswered


def run_once(scenario: str, configs: dict, secret: bytes, max_tokens: int) -> dict:
    """One worker's life in `scenario`. result["failures"] lists what went wrong (each
    one an error); a figure is left None when the operation it times failed."""
    config = configs["nodrain" if scenario == "nodrain" else "dev"]
    import openai  # deferred: a heavy import, and only this bench step needs it

    rec = Recorder()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    log_path = config.parent / f"worker-{scenario}-{time.monotonic_ns()}.stderr"
    failures: list[str] = []
    proc = None
    try:
        with open(log_path, "w+b") as err:
            t_launch = time.monotonic()
            proc = subprocess.Popen(
                [
                    str(ISENSE),
                    "--config",
                    str(config),
                    "worker",
                    "--model",
                    MODEL,
                    "--gateway",
                    f"http://127.0.0.1:{rec.port}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
            wait_registered(proc, rec, err, t_launch, log_path)
            t_reg, _, body = rec.first("register")
            result = {"scenario": scenario, "start_to_registered_s": round(t_reg - t_launch, 2)}
            time.sleep(1.0)  # a heartbeat or two

            outcomes: list[str] = []
            threads = []
            if scenario != "idle":
                threads = load_worker(openai, body, secret, max_tokens, result, failures, outcomes)
            stop_worker(proc, scenario, rec, threads, result, failures)
            if threads:
                count_clients(threads, outcomes, result, failures)
            err.seek(0)
            log = err.read().decode()
            drained = re.search(r"(no request in flight|not serving|in flight; aborting)", log)
            result["drain_end"] = drained.group(1) if drained else None
            result["log"] = str(log_path)
            result["failures"] = failures
            return result
    finally:
        if proc is not None and proc.poll() is None:
            for pid in descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)
        rec.close()


def summarise(results: list[dict], args) -> dict:
    """The JSON figures over all runs: medians over the runs without a failure."""

    def med(scenario, key):  # over the runs of `scenario` without a failure
        vals = [r[key] for r in results if r["scenario"] == scenario and r[key] is not None and not r["failures"]]
        return round(statistics.median(vals), 3) if vals else None

    summary = {
        "bench": "worker",
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "start_to_registered_s_median": round(statistics.median(r["start_to_registered_s"] for r in results), 2),
    }
    for scenario in SCENARIOS:
        summary[f"{scenario}_sigterm_to_exit_s_median"] = med(scenario, "sigterm_to_exit_s")
        summary[f"{scenario}_sigterm_to_dereg_s_median"] = med(scenario, "sigterm_to_dereg_s")
    for scenario in SCENARIOS[1:]:
        reasons: dict[str, int] = {}
        for r in results:
            if r["scenario"] == scenario:
                for k, v in r["finish"].items():
                    reasons[k] = reasons.get(k, 0) + v
        summary[f"{scenario}_finish"] = reasons
        summary[f"{scenario}_client_failures"] = sum(r["client_failures"] for r in results if r["scenario"] == scenario)
        summary[f"{scenario}_in_flight_at_signal_min"] = min(
            r["in_flight_at_signal"] for r in results if r["scenario"] == scenario
        )
    summary["exit_codes"] = sorted({r["exit_code"] for r in results}, key=str)
    return summary


def main() -> int:
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
            print(
                f"run {run + 1} {scenario:5}: "
                + ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("scenario", "log")),
                flush=True,
            )
            if r["failures"] or (r["sigterm_to_exit_s"] or 0) > 1.5:
                print(f"  {'failed' if r['failures'] else 'slow stop'}: see {r['log']}", flush=True)
            results.append(r)

    summary = summarise(results, args)
    failures = [
        f"run {i // len(SCENARIOS) + 1} {r['scenario']}: {f}" for i, r in enumerate(results) for f in r["failures"]
    ]
    return finish(summary, len(failures), failures)


if __name__ == "__main__":
    sys.exit(guarded("worker", main))
