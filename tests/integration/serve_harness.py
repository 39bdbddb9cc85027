"""A whole isense site on the dev cluster for tests and benchmarks: `isense serve` as a
process on its own config (temp ledger, secret, port, job dir), lending a few nodes,
with those nodes' hooks pointed at it (/etc/isense/hooks.env, restored at the end).

    site = ServeSite(["n3", "n4"])
    site.start(); site.wait_serving(2)
    job_id, submitted = site.train("n3", seconds=20)
    started = site.started_at(job_id)
    site.close()

Needs root (sbatch as trainer and isense, hooks.env) and the dev cluster up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from isense_slurm.errors import SlurmError  # noqa: E402
from isense_slurm.secrets import create_secret  # noqa: E402
from isense_slurm.slurm import CliBackend, SubmitOptions  # noqa: E402
from waiting import free_port, wait_for  # noqa: E402

ISENSE = Path(sys.executable).with_name("isense")
DEV_CONFIG = REPO / "dev" / "isense.dev.toml"
DEV_ROOT = Path("/var/lib/isense-dev")
HOOKS_ENV = Path("/etc/isense/hooks.env")
TRAINER = "trainer"
SERVICE = "isense"
MODEL = "tiny-llama"


def site_config(
    template: str,
    *,
    root: Path,
    port: int,
    pools: list[str],
    job_dir: Path,
    min_idle_seconds: float = 2,
    tick_seconds: float = 2,
    max_job_minutes: int = 30,
    backend: str = "cli",
) -> str:
    """The dev config with this site's pools, port, ledger, secret, job dir and [slurm] backend."""
    swaps = [
        (r"(?m)^pools = .*$", f"pools = {json.dumps(pools)}"),
        (r"(?m)^min_idle_seconds = .*$", f"min_idle_seconds = {min_idle_seconds:g}"),
        (r"(?m)^tick_seconds = .*$", f"tick_seconds = {tick_seconds:g}\nbackend = {json.dumps(backend)}"),
        (r"(?m)^max_job_minutes = .*$", f"max_job_minutes = {max_job_minutes}"),
        (r"(?m)^job_dir = .*$", f'job_dir = "{job_dir}"'),
        (r"(?m)^listen = .*$", f'listen = "127.0.0.1:{port}"'),
        (r"(?m)^advertise_url = .*$", f'advertise_url = "http://127.0.0.1:{port}"'),
        (r'(?m)^path = "/var/lib/isense-dev/ledger.db"$', f'path = "{root / "ledger.db"}"'),
        (r'(?m)^dir = "/var/lib/isense-dev/secrets"$', f'dir = "{root / "secrets"}"'),
    ]
    text = template
    for pattern, value in swaps:
        text, n = re.subn(pattern, value, text)
        assert n == 1, f"dev config has no single line for {pattern}"
    return text


class ServeSite:
    def __init__(self, nodes: list[str], *, name: str = "itest", **config):
        self.nodes = list(nodes)
        self.slurm = CliBackend()
        self.root = DEV_ROOT / f"{name}-{uuid.uuid4().hex[:8]}"
        self.root.mkdir(mode=0o755)
        self.root.chmod(0o755)
        self.job_dir = self.root / "jobs"
        self.job_dir.mkdir()
        self.job_dir.chmod(0o1777)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = self.root / "isense.toml"
        self.config.write_text(
            site_config(
                DEV_CONFIG.read_text(), root=self.root, port=self.port, pools=self.nodes, job_dir=self.job_dir, **config
            )
        )
        self.config.chmod(0o644)
        import pwd

        create_secret(self.root / "secrets", pwd.getpwnam(SERVICE).pw_gid)
        self.log_path = self.root / "serve.log"
        self.hook_log = self.root / "hooks.log"
        self.proc: subprocess.Popen | None = None
        self._hooks_saved = HOOKS_ENV.read_bytes() if HOOKS_ENV.exists() else None
        self._install_hooks_env()
        self.trainer_jobs: list[int] = []
        # Before the daemon starts: the gateway loads keys at start, later ones a poll later.
        self.key = self.api_key()

    # --- hooks ----------------------------------------------------------------------

    def _install_hooks_env(self) -> None:
        test = " || ".join(f'[ "${{SLURMD_NODENAME:-}}" = "{n}" ]' for n in self.nodes)
        block = (
            f"\n# {self.root.name}: isense serve test site (restored afterwards)\n"
            f"if {test}; then\n"
            f'  ISENSE_CONFIG="{self.config}"\n  ISENSE_HOOK_LOG="{self.hook_log}"\n'
            f'  ISENSE_HOOK_SPOOL="{self.root / "spool"}"\nfi\n'
        )
        HOOKS_ENV.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = HOOKS_ENV.with_suffix(".tmp")
        tmp.write_bytes((self._hooks_saved or b"") + block.encode())
        tmp.chmod(0o644)
        os.replace(tmp, HOOKS_ENV)

    def _restore_hooks_env(self) -> None:
        if self._hooks_saved is None:
            HOOKS_ENV.unlink(missing_ok=True)
        else:
            HOOKS_ENV.write_bytes(self._hooks_saved)

    # --- the daemon -----------------------------------------------------------------

    def start(self, *args: str) -> None:
        assert self.proc is None or self.proc.poll() is not None, "serve already runs"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(ISENSE), "--config", str(self.config), "serve", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self.controller, 30, "isense serve to answer")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as answer:
                return json.loads(answer.read())
        except OSError:
            return None

    def controller(self) -> dict | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"isense serve exited ({self.proc.returncode}): {self.log()[-2000:]}")
        return self.get("/internal/controller")

    def serving(self) -> list[dict]:
        view = self.get("/internal/workers") or {}
        return [w for w in view.get("workers", []) if w["state"] == "serving"]

    def wait_serving(self, count: int, timeout: float = 240, nodes: set[str] | None = None) -> list[dict]:
        def ready():
            live = [w for w in self.serving() if nodes is None or w["node"] in nodes]
            return live if len(live) >= count else None

        return wait_for(ready, timeout, f"{count} serving workers", interval=0.5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def api_key(self) -> str:
        from isense_slurm.meter.ledger import Ledger

        with Ledger.open(self.root / "ledger.db") as ledger:
            _, plaintext = ledger.create_key(f"test-{uuid.uuid4().hex[:6]}")
        return plaintext

    # --- Slurm ----------------------------------------------------------------------

    def worker_jobs(self, active_only: bool = True):
        jobs = self.slurm.jobs(user=SERVICE)
        return [
            j
            for j in jobs
            if j.name.startswith("isense-")
            and (j.nodes or j.required_nodes)
            and set(j.nodes or j.required_nodes) <= set(self.nodes)
            and (not active_only or j.is_pending or j.is_active)
        ]

    def train(self, node: str, seconds: float = 20, gpus: int = 4) -> tuple[int, float]:
        """A training job pinned to `node`; returns (job id, wall time just before sbatch)."""
        script = f'#!/bin/bash\ndate +%s.%N > "{self.job_dir}/train-$SLURM_JOB_ID.start"\nsleep {seconds}\n'
        options = SubmitOptions(
            partition="train",
            job_name="itest-train",
            nodelist=node,
            gres=f"gpu:{gpus}",
            time=max(1, int(seconds // 60) + 1),
            output=str(self.job_dir / "train-%j.out"),
            chdir=str(self.job_dir),
        )
        submitted = time.time()
        job_id = self.slurm.submit(script, options, as_user=TRAINER)
        self.trainer_jobs.append(job_id)
        return job_id, submitted

    def started_at(self, job_id: int, timeout: float = 30) -> float:
        path = self.job_dir / f"train-{job_id}.start"
        return float(
            wait_for(lambda: path.exists() and path.read_text().strip(), timeout, f"training job {job_id} to start")
        )

    def close(self) -> None:
        self.kill(signal.SIGTERM)
        for job_id in self.trainer_jobs:
            try:
                self.slurm.cancel(job_id)
            except SlurmError:
                pass
        for job in self.worker_jobs():
            try:
                self.slurm.cancel(job.job_id)
            except SlurmError:
                pass
        try:
            wait_for(lambda: not self.worker_jobs(), 30, "the site's workers to end")
        finally:
            self._restore_hooks_env()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def site_on_free_nodes(cluster, request, nodes: list[str], **site_args) -> Iterator[ServeSite]:
    """A started site on nodes no job holds, closed afterwards; its folder is kept (and
    named) when a test of the module failed, for its serve.log, hooks.log and ledger."""
    busy = [j.job_id for j in cluster.slurm.jobs() if (j.is_active or j.is_pending) and set(j.nodes) & set(nodes)]
    assert not busy, f"{nodes} must be free for this module (jobs {busy} hold them)"
    failed_before = request.session.testsfailed
    site = ServeSite(nodes, **site_args)
    try:
        site.start()
        yield site
    finally:
        site.close()
        if request.session.testsfailed == failed_before:
            site.remove()
        else:
            print(f"kept {site.root} (serve.log, hooks.log, ledger.db, job output)")


class Traffic:
    """Non-streamed chat completions through the gateway from `concurrency` threads
    (official openai client, no client-side retries) until stop(); records each one."""

    def __init__(self, url: str, key: str, concurrency: int = 4, max_tokens: int = 48, pause: float = 0.0):
        import threading

        import openai

        self.client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        self.max_tokens = max_tokens
        self.pause = pause  # seconds between one client's requests
        self.results: list[tuple[float, float, str]] = []  # (sent, answered, "ok" or error)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(concurrency)]
        for t in self._threads:
            t.start()

    def _loop(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            sent = time.time()
            try:
                answer = self.client.chat.completions.create(
                    model=MODEL,
                    max_tokens=self.max_tokens,
                    messages=[{"role": "user", "content": f"client {i} request {n}: count to twenty"}],
                )
                outcome = "ok" if answer.choices and answer.usage else "empty answer"
            except Exception as err:  # noqa: BLE001 - every failure is a finding
                outcome = f"{type(err).__name__}: {err}"[:200]
            with self._lock:
                self.results.append((sent, time.time(), outcome))
            if outcome != "ok":
                time.sleep(0.2)  # no hot loop of failures on 2 shared cores
            elif self.pause:
                time.sleep(self.pause)

    def stop(self) -> list[tuple[float, float, str]]:
        self._stop.set()
        for t in self._threads:
            t.join(90)
        return list(self.results)

    def failures(self) -> list[str]:
        return [r[2] for r in self.results if r[2] != "ok"]
