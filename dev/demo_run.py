"""The whole loop on the dev cluster: lend -> serve -> meter -> reclaim, in one run.

Run by `dev/demo` (README's first command) with the project's virtualenv. It uses a
demo copy of dev/isense.dev.toml (its own ledger, half the pool lent so two CPU vLLMs
share this small machine), starts `isense serve`, waits until the controller has lent
idle GPUs to serving workers with nobody acting, drives paid traffic through the gateway
with the official openai client, submits a training job onto a lent node as the test
user, and prints how fast the node came back, what the clients saw, the ledger's view,
`isense status` and `isense earnings`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from isense_slurm.meter.ledger import Ledger
from isense_slurm.slurm import SubmitOptions, default_backend

REPO = Path(__file__).resolve().parent.parent
ISENSE = [str(REPO / ".venv" / "bin" / "isense")]
DEMO_DIR = Path(os.environ.get("ISENSE_DEMO_DIR", "/var/lib/isense-dev/demo"))
WORKERS_WANTED = 2
TRAINER = "trainer"


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def isense(*args: str, capture: bool = False) -> str:
    cmd = ISENSE + ["--config", str(DEMO_DIR / "isense.toml"), *args]
    if capture:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    subprocess.run(cmd, check=True)
    return ""


def write_demo_config() -> Path:
    """The dev config with its own ledger and half the pool lendable."""
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    text = re.sub(r'(?m)^path = "/var/lib/isense-dev/ledger.db"', f'path = "{DEMO_DIR}/ledger.db"', text)
    text = re.sub(r"(?m)^max_lend_share = .*$", "max_lend_share = 0.5", text)
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    for stale in DEMO_DIR.glob("ledger.db*"):
        stale.unlink()
    path = DEMO_DIR / "isense.toml"
    path.write_text(text)
    return path


def wait_for_workers(client, want: int, timeout: float) -> list[dict]:
    start = time.monotonic()
    last = -1
    while time.monotonic() - start < timeout:
        workers = live_workers()
        if len(workers) != last:
            print(f"  {time.monotonic() - start:5.1f} s: {len(workers)} serving worker(s)", flush=True)
            last = len(workers)
        if len(workers) >= want:
            return workers
        time.sleep(1)
    raise SystemExit(f"demo: fewer than {want} workers serving after {timeout:.0f} s; see {DEMO_DIR}/serve.log")


def live_workers() -> list[dict]:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8000/internal/workers", timeout=2) as resp:
            body = json.load(resp)
    except OSError:
        return []
    workers = body.get("workers", body) if isinstance(body, dict) else body
    return [w for w in workers if w.get("state", "serving") == "serving"]


class Traffic:
    """Client threads sending chat requests, streamed and not, until stopped."""

    def __init__(self, client, threads: int = 6):
        self.client = client
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.errors = self.prompt_tokens = self.completion_tokens = 0
        self.error_samples: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def _run(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            streamed = (index + n) % 2 == 0
            try:
                usage = self._one(streamed, f"Tell me about GPU number {index}-{n}.")
            except Exception as err:  # noqa: BLE001 - the demo reports every client error
                with self.lock:
                    self.errors += 1
                    if len(self.error_samples) < 3:
                        self.error_samples.append(f"{type(err).__name__}: {err}")
                continue
            with self.lock:
                self.ok += 1
                self.prompt_tokens += usage.prompt_tokens
                self.completion_tokens += usage.completion_tokens

    def _one(self, streamed: bool, prompt: str):
        messages = [{"role": "user", "content": prompt}]
        extra = {"ignore_eos": True}
        if not streamed:
            reply = self.client.chat.completions.create(
                model="tiny-llama", messages=messages, max_tokens=32, extra_body=extra
            )
            return reply.usage
        usage = None
        stream = self.client.chat.completions.create(
            model="tiny-llama",
            messages=messages,
            max_tokens=32,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=extra,
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
        if usage is None:
            raise RuntimeError("stream ended without usage")
        return usage


def submit_training(node: str) -> int:
    slurm = default_backend()
    options = SubmitOptions(
        partition="train",
        nodelist=node,
        gres="gpu:4",
        job_name="demo-training",
        output="/var/lib/isense-dev/jobs/demo-training-%j.out",
        time="5",
    )
    return slurm.submit(
        "#!/bin/bash\necho training on $SLURMD_NODENAME GPUs $CUDA_VISIBLE_DEVICES\nsleep 20\n",
        options,
        as_user=TRAINER,
    )


def wait_running(job_id: int, timeout: float = 30.0) -> float:
    slurm = default_backend()
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        job = slurm.job(job_id)
        if job is not None and job.state == "RUNNING":
            return time.monotonic() - start
        time.sleep(0.05)
    raise SystemExit(f"demo: training job {job_id} did not start within {timeout:.0f} s")


def setup() -> tuple[Path, str]:
    """The demo config, the secret and a client key."""
    say("config: dev/isense.dev.toml with its own ledger and half the pool lendable")
    config = write_demo_config()
    print(f"  {config}")
    isense("secrets", "init")
    key = json.loads(isense("keys", "create", "demo-client", "--json", capture=True))
    return config, key.get("key") or key.get("plaintext")


def reclaim_under_traffic(client, workers: list[dict]) -> None:
    """Paid traffic, then a training job onto a lent node; what the clients saw."""
    say("serve: paid traffic through the gateway (openai client, streamed and not)")
    traffic = Traffic(client)
    traffic.start()
    time.sleep(8)

    node = sorted(w["node"] for w in workers)[0]
    say(f"reclaim: a training job of user {TRAINER} needs all 4 GPUs of {node}")
    job_id = submit_training(node)
    seconds = wait_running(job_id)
    print(
        f"  training job {job_id} submitted and RUNNING on {node} after {seconds:.2f} s "
        f"(submit -> running, measured by polling squeue)"
    )
    time.sleep(6)
    traffic.finish()
    print(
        f"  clients: {traffic.ok} requests ok, {traffic.errors} errors, "
        f"{traffic.prompt_tokens} prompt + {traffic.completion_tokens} completion tokens received"
    )
    for sample in traffic.error_samples:
        print(f"  client error: {sample}")


def show_ledger() -> None:
    say("meter: the ledger's view of the same traffic")
    time.sleep(1)  # let the controller record the reclaim the hooks reported
    earnings = json.loads(isense("earnings", "--json", capture=True))
    total = earnings.get("total", earnings)
    print(f"  ledger: {json.dumps(total)}")
    ledger = Ledger.open(DEMO_DIR / "ledger.db", create=False)
    for r in ledger.reclaims():
        if None in (r.submit_time, r.sigterm_time, r.gpus_free_time, r.start_time):
            print(f"  reclaim (incomplete): {r}")
            continue
        print(
            f"  reclaim of {r.node} by training job {r.training_job_id} (worker {r.worker_job_id}): "
            f"submit -> SIGTERM {r.sigterm_time - r.submit_time:.2f} s, "
            f"-> GPUs free {r.gpus_free_time - r.submit_time:.2f} s, "
            f"-> training started {r.start_time - r.submit_time:.2f} s "
            f"(Slurm's submit time has 1 s resolution)"
        )
    ledger.close()


def stop_serve(serve: subprocess.Popen) -> None:
    """isense serve stopped, and the demo's jobs cancelled."""
    serve.send_signal(signal.SIGTERM)
    try:
        serve.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(serve.pid, signal.SIGKILL)
    subprocess.run(["scancel", "-u", "isense"], check=False)
    subprocess.run(["scancel", "-n", "demo-training"], check=False)


def main() -> int:
    from openai import OpenAI  # deferred: a heavy import

    config, api_key = setup()
    say("isense serve: the controller lends idle GPUs, the gateway serves them")
    log = open(DEMO_DIR / "serve.log", "w")  # noqa: SIM115 - open for isense serve's life
    serve = subprocess.Popen(
        ISENSE + ["--config", str(config), "serve"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=api_key, max_retries=0, timeout=60)
        workers = wait_for_workers(client, WORKERS_WANTED, timeout=300)
        for w in workers:
            print(f"  worker job {w.get('job_id')} on {w.get('node')} serving {w.get('model')}")
        isense("status", "-N")
        reclaim_under_traffic(client, workers)
        show_ledger()
        say("report: isense status -N")
        isense("status", "-N")
        say("report: isense earnings --group model")
        isense("earnings", "--group", "model")
    finally:
        stop_serve(serve)
    say("done: the dev cluster stays up (dev/cluster down stops it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
