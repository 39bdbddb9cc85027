"""`isense worker` with the real CPU vLLM, against a real HTTP control plane.

The control plane here is a small aiohttp server standing in for the gateway's
/internal/workers/* endpoints only (it records what the worker sends; the gateway's
own tests cover its side). Requests to the worker's vLLM go through the official
openai client. Secrets and config are per test run (temp dirs); nothing of the dev
cluster is used.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp import web

from isense_slurm.secrets import check_worker_token, create_secret, load_secret, vllm_api_key
from isense_slurm.worker.vllm_process import group_members
from waiting import stop_process

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
ISENSE = Path(sys.executable).with_name("isense")
VLLM_VENV = Path(os.environ.get("ISENSE_VLLM_VENV", "/opt/isense/vllm-venv"))
MODEL_DIR = Path("/var/lib/isense-dev/models/tiny-llama")
MODEL = "tiny-llama"
STARTUP_TIMEOUT = 300  # vLLM on 2 shared cores: 17-30 s alone, more under load
KILL_WAIT = 5  # the dev cluster's KillWait: the worker must be gone well before it


class ControlPlane:
    """The gateway's worker-control endpoints, recording each call."""

    def __init__(self):
        self.calls: list[dict] = []
        self.register_failures = 0  # answer this many registers with 503 first
        self.register_refusal: str | None = None  # answer registers 404 with this error
        self.forget_worker = False  # answer the next heartbeat 404
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "control plane did not start"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/internal/workers/{action}", self._handle)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = await request.json()
        call = {
            "at": time.monotonic(),
            "action": action,
            "body": body,
            "auth": request.headers.get("Authorization", ""),
        }
        status, answer = 200, {"ok": True}
        if action == "register":
            if self.register_failures > 0:
                self.register_failures -= 1
                status, answer = 503, {"error": "starting"}
            elif self.register_refusal:
                status, answer = 404, {"error": self.register_refusal}
        elif action == "heartbeat" and self.forget_worker:
            self.forget_worker = False
            status, answer = 404, {"error": "unknown worker"}
        elif action == "deregister":
            # Is vLLM still up at this moment? (It must be: deregistration comes first.)
            call["vllm_health"] = await _health_status(self.registered_url())
        call["status"] = status
        with self._lock:
            self.calls.append(call)
        return web.json_response(answer, status=status)

    def of(self, action: str) -> list[dict]:
        with self._lock:
            return [c for c in self.calls if c["action"] == action]

    def registered_url(self) -> str:
        ok = [c for c in self.of("register") if c["status"] == 200]
        return ok[-1]["body"]["url"] if ok else ""

    def wait_for(self, action: str, count: int = 1, timeout: float = 30, proc=None) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.of(action)) < count:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"worker exited ({proc.returncode}) before {action} #{count}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {action} #{count} within {timeout} s: {self.calls}")
            time.sleep(0.05)
        return self.of(action)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def _health_status(url: str) -> int | None:
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(url + "/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                return r.status
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_installed():
    """The CPU vLLM venv and the tiny model, made by the project's own scripts if missing."""
    if not (VLLM_VENV / "bin" / "vllm").exists():
        subprocess.run([str(REPO / "dev" / "vllm-setup")], check=True, timeout=1800)
    if not (MODEL_DIR / "config.json").exists():
        subprocess.run(
            [str(VLLM_VENV / "bin" / "python"), str(REPO / "dev" / "make-tiny-model")],
            check=True,
            timeout=600,
            stdout=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("secrets")
    create_secret(d)
    return d


def make_config(
    dest: Path,
    secrets_dir: Path,
    model_path: str = str(MODEL_DIR),
    drain_seconds: float | None = None,
    vllm_executable: str | None = None,
) -> Path:
    """dev/isense.dev.toml with this run's secrets, quick heartbeats, a model path and
    optionally another drain budget or vLLM executable."""
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    if vllm_executable is not None:
        text = re.sub(r"(?m)^vllm_executable = .*$", f'vllm_executable = "{vllm_executable}"', text)
        assert f'vllm_executable = "{vllm_executable}"' in text
    if drain_seconds is not None:
        text = re.sub(r"(?m)^drain_seconds = .*$", f"drain_seconds = {drain_seconds}", text)
    text = re.sub(r'(?m)^dir = ".*"$', f'dir = "{secrets_dir}"', text)
    text = text.replace(
        "[worker]\n", f"[worker]\nheartbeat_seconds = 0.5\nstartup_timeout_seconds = {STARTUP_TIMEOUT}\n", 1
    )
    text = text.replace(f'path = "{MODEL_DIR}"', f'path = "{model_path}"', 1)
    assert f'dir = "{secrets_dir}"' in text and f'path = "{model_path}"' in text
    dest.write_text(text)
    return dest


class Worker:
    """An `isense worker` process outside Slurm (its stderr goes to a file)."""

    def __init__(self, config: Path, gateway: str, tmp: Path, model: str = MODEL):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
        env["TMPDIR"] = str(tmp)  # the worker's temp dir for vLLM's log lands here
        self.stderr_path = tmp / "worker.stderr"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [str(ISENSE), "--config", str(config), "worker", "--model", model, "--gateway", gateway],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def vllm_pgid(self) -> int:
        """vLLM's process group, as the worker logs it."""
        found = re.search(r"vLLM started: pid \d+ \(process group (\d+)\)", self.stderr)
        assert found, self.stderr
        return int(found.group(1))

    def stop(self):
        stop_process(self.proc)
        self._stderr.close()


@pytest.fixture(scope="module")
def control_plane():
    cp = ControlPlane()
    yield cp
    cp.close()


@pytest.fixture(scope="module")
def worker(vllm_installed, secrets_dir, control_plane, tmp_path_factory):
    """One worker for the module. The gateway 'is not up' for its first 2 registers."""
    tmp = tmp_path_factory.mktemp("worker")
    control_plane.register_failures = 2
    w = Worker(make_config(tmp / "isense.toml", secrets_dir), control_plane.url, tmp)
    try:
        control_plane.wait_for("register", 3, timeout=STARTUP_TIMEOUT, proc=w.proc)
        w.pgid = w.vllm_pgid()
        yield w
    finally:
        w.stop()
        assert not group_members(getattr(w, "pgid", w.proc.pid)), "vLLM processes left"


@pytest.fixture(scope="module")
def registration(worker, control_plane) -> dict:
    return control_plane.of("register")[-1]


def test_registers_after_retrying_with_identity_and_valid_token(worker, registration, control_plane, secrets_dir):
    assert [c["status"] for c in control_plane.of("register")] == [503, 503, 200]
    body = registration["body"]
    host = socket.gethostname()
    assert body["job_id"].startswith(f"local-{host}-")
    assert body["node"] == host
    assert body["model"] == MODEL
    assert body["gpus"] == os.environ.get("CUDA_VISIBLE_DEVICES", "")
    # dev config: advertise_host = "127.0.0.1"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", body["url"])
    scheme, token = registration["auth"].split(" ", 1)
    assert scheme == "Bearer"
    assert check_worker_token(load_secret(secrets_dir), body["job_id"], token)
    assert not check_worker_token(load_secret(secrets_dir), body["job_id"] + "x", token)
    # How the start went, for the ledger: the steps in order, and vLLM's own durations
    # read from its log (the dev vLLM prints both).
    start = body["start"]
    assert start["worker_up"] <= start["vllm_spawned"] <= start["healthy"] <= start["probed"] <= time.time()
    assert start["weights_s"] >= 0 and start["engine_s"] >= 0


def test_vllm_answers_with_the_derived_key_only(registration, secrets_dir):
    body = registration["body"]
    key = vllm_api_key(load_secret(secrets_dir), body["job_id"])
    with openai.OpenAI(base_url=body["url"] + "/v1", api_key=key, max_retries=0, timeout=60) as c:
        answer = c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=8, extra_body={"ignore_eos": True}
        )
        assert answer.usage.completion_tokens == 8
    with openai.OpenAI(base_url=body["url"] + "/v1", api_key="not-the-key", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as err:
            c.models.list()
        assert err.value.status_code == 401


def test_no_secret_on_command_lines_or_in_logs(worker, registration, secrets_dir):
    job_id = registration["body"]["job_id"]
    secret = load_secret(secrets_dir)
    key, token = vllm_api_key(secret, job_id), registration["auth"].split(" ", 1)[1]
    members = group_members(worker.pgid) + [worker.proc.pid]
    assert len(members) >= 2
    for pid in members:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert key not in cmdline and token not in cmdline and secret.decode() not in cmdline
    log_path = re.search(r"vLLM log: (\S+)", worker.stderr).group(1)
    for text in (worker.stderr, Path(log_path).read_text(errors="replace")):
        assert key not in text and token not in text and secret.decode() not in text


def test_heartbeats_and_registers_again_when_forgotten(worker, control_plane, registration):
    beats = control_plane.wait_for("heartbeat", 2, proc=worker.proc)
    assert all(b["body"] == {"job_id": registration["body"]["job_id"]} for b in beats)
    assert all(b["auth"] == registration["auth"] for b in beats)
    registers = len(control_plane.of("register"))
    control_plane.forget_worker = True
    again = control_plane.wait_for("register", registers + 1, proc=worker.proc)[-1]
    assert again["body"] == registration["body"] and again["status"] == 200


class Streams:
    """16 concurrent streamed completions to a worker's vLLM, with their outcomes."""

    def __init__(self, url: str, key: str, count: int = 16, max_tokens: int = 400):
        self.url, self.results = url, []
        self._started = threading.Semaphore(0)
        self.threads = [threading.Thread(target=self._ask, args=(key, max_tokens)) for _ in range(count)]
        for t in self.threads:
            t.start()

    def _ask(self, key: str, max_tokens: int):
        finish, usage, first = None, None, True
        with openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=60) as c:
            try:
                stream = c.completions.create(
                    model=MODEL,
                    prompt="Once upon a time",
                    max_tokens=max_tokens,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_body={"ignore_eos": True},
                )
                for chunk in stream:
                    if first:
                        self._started.release()
                        first = False
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                    usage = chunk.usage or usage
                self.results.append((finish, usage.completion_tokens if usage else None))
            except Exception as err:  # noqa: BLE001 - recorded, asserted by the tests
                self.results.append(("error", repr(err)))
            if first:
                self._started.release()

    def wait_all_in_vllm(self):
        """Every stream has produced a token: all 16 requests are in vLLM."""
        for _ in self.threads:
            assert self._started.acquire(timeout=60), "streams never started"

    def join(self):
        for t in self.threads:
            t.join(60)
        return self.results


def _sigterm_and_check(worker, control_plane, registration, streams):
    signalled = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    # Exit 0 before Slurm's KillWait would SIGKILL it.
    assert worker.proc.wait(timeout=KILL_WAIT) == 0, worker.stderr
    results = streams.join()

    (dereg,) = control_plane.of("deregister")
    assert dereg["body"] == {"job_id": registration["body"]["job_id"], "reason": "sigterm"}
    assert dereg["auth"] == registration["auth"]
    assert dereg["vllm_health"] == 200  # vLLM still served when the gateway let go
    assert dereg["at"] >= signalled
    assert group_members(worker.pgid) == []
    assert len(results) == 16
    for finish_reason, tokens in results:
        # Finished within the drain budget, or aborted by vLLM with the usage so far:
        # every client gets a proper answer, none a broken connection.
        assert finish_reason in ("length", "abort"), (results, worker.stderr)
        assert tokens and tokens > 0
    assert not any(c["at"] > dereg["at"] for c in control_plane.of("heartbeat") + control_plane.of("register")), (
        "control traffic after deregistering"
    )
    return results


def test_sigterm_deregisters_first_drains_and_leaves_nothing(worker, control_plane, registration, secrets_dir):
    url = registration["body"]["url"]
    streams = Streams(url, vllm_api_key(load_secret(secrets_dir), registration["body"]["job_id"]))
    streams.wait_all_in_vllm()
    _sigterm_and_check(worker, control_plane, registration, streams)


def test_sigterm_past_a_short_budget_aborts_cleanly(vllm_installed, secrets_dir, tmp_path):
    """Budget 0.05 s: what is still running is aborted by vLLM's engine, and answered."""
    cp = ControlPlane()
    w = Worker(make_config(tmp_path / "isense.toml", secrets_dir, drain_seconds=0.05), cp.url, tmp_path)
    try:
        (registration,) = cp.wait_for("register", timeout=STARTUP_TIMEOUT, proc=w.proc)
        w.pgid = w.vllm_pgid()
        body = registration["body"]
        streams = Streams(body["url"], vllm_api_key(load_secret(secrets_dir), body["job_id"]), max_tokens=480)
        streams.wait_all_in_vllm()
        results = _sigterm_and_check(w, cp, registration, streams)
        print(w.stderr.split("SIGTERM received", 1)[1], results)  # shown by pytest -rP
        if "aborting them" in w.stderr:  # the budget ended with requests running
            assert "engine first" in w.stderr
            assert any(finish == "abort" for finish, _ in results)
    finally:
        w.stop()
        cp.close()


def test_unknown_model_at_the_gateway_exits_with_its_message(vllm_installed, secrets_dir, tmp_path):
    cp = ControlPlane()
    cp.register_refusal = "model 'tiny-llama' is not served here"
    w = Worker(make_config(tmp_path / "isense.toml", secrets_dir), cp.url, tmp_path)
    try:
        rc = w.proc.wait(timeout=STARTUP_TIMEOUT)
        assert rc == 4, w.stderr
        assert "refused registration" in w.stderr
        assert "model 'tiny-llama' is not served here" in w.stderr
        assert group_members(w.vllm_pgid()) == []  # vLLM stopped with it
        assert [c["status"] for c in cp.of("register")] == [404]
    finally:
        w.stop()
        cp.close()


def test_bad_model_path_exits_nonzero_with_the_vllm_log_tail(vllm_installed, secrets_dir, control_plane, tmp_path):
    missing = tmp_path / "no-such-model"
    config = make_config(tmp_path / "isense.toml", secrets_dir, model_path=str(missing))
    _, stderr = failed_start(config, control_plane, tmp_path)
    assert "lines of" in stderr and "end of vLLM log" in stderr
    tail = stderr.split("lines of", 1)[1]
    assert str(missing) in tail or "no-such-model" in tail  # vLLM's own complaint
    assert "isense: vLLM exited with code" in stderr


def failed_start(config: Path, control_plane, tmp_path: Path) -> tuple[Worker, str]:
    """Run a worker that must fail before serving: (the worker, its stderr), once it
    exited 3 without a single call to the control plane."""
    before = len(control_plane.calls)
    w = Worker(config, control_plane.url, tmp_path)
    try:
        rc = w.proc.wait(timeout=STARTUP_TIMEOUT)
    finally:
        w.stop()
    stderr = w.stderr
    assert rc == 3, stderr
    assert len(control_plane.calls) == before  # never registered
    return w, stderr


def test_a_vllm_that_is_healthy_but_cannot_complete_is_never_registered(secrets_dir, control_plane, tmp_path):
    """/health is no proof: the worker registers only after one real completion."""
    stand_in = tmp_path / "vllm"
    stand_in.write_text(
        f"#!{sys.executable}\nimport runpy, sys\n"
        f"runpy.run_path({str(REPO / 'tests/integration/faulty_vllm.py')!r}, run_name='__main__')\n"
    )
    stand_in.chmod(0o755)
    config = make_config(tmp_path / "isense.toml", secrets_dir, vllm_executable=str(stand_in))
    w, stderr = failed_start(config, control_plane, tmp_path)
    assert "vLLM healthy" in stderr
    assert "failed its first completion: HTTP 500" in stderr and "EngineCore encountered an issue" in stderr
    assert group_members(w.vllm_pgid()) == []  # and the stand-in was stopped


def test_vllm_death_while_serving_deregisters_and_exits_3(vllm_installed, secrets_dir, tmp_path):
    cp = ControlPlane()
    w = Worker(make_config(tmp_path / "isense.toml", secrets_dir), cp.url, tmp_path)
    try:
        cp.wait_for("register", timeout=STARTUP_TIMEOUT, proc=w.proc)
        pgid = w.vllm_pgid()
        os.kill(pgid, signal.SIGKILL)  # the API server alone: its engine would live on
        rc = w.proc.wait(timeout=30)
        stderr = w.stderr
        assert rc == 3, stderr
        assert "isense: vLLM died while serving" in stderr and "end of vLLM log" in stderr
        (dereg,) = cp.of("deregister")
        assert dereg["body"]["reason"] == "failed"
        assert group_members(pgid) == []  # the orphaned engine went too
    finally:
        w.stop()
        cp.close()
