"""`isense gateway` as a real child process, and plain HTTP to it: what the gateway's
integration tests share (test_gateway.py with vLLM, test_gateway_fuzz.py without).

`Site` is one run's config (dev/isense.dev.toml with a temp ledger, secret and port, plus
SPARE, a model no worker ever serves), `Gateway` the `isense gateway` process on it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import openai

from isense_slurm.meter.ledger import Ledger
from isense_slurm.secrets import worker_token
from waiting import free_port, stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
ISENSE = Path(sys.executable).with_name("isense")
MODEL = "tiny-llama"
SPARE = "tiny-llama-spare"  # configured, never served: always 429
DRAIN_SECONDS = 0.05  # short, so a SIGTERMed worker's vLLM aborts what is in flight
CLIENT_TIMEOUT = 600  # seconds without a byte before a test's client gives up


@dataclass
class Resp:
    status_code: int
    headers: dict
    text: str

    def json(self):
        return json.loads(self.text)


def http(
    method: str,
    url: str,
    *,
    headers: dict | None = None,
    body: bytes | str | None = None,
    json_body=None,
    timeout: float = 10,
) -> Resp:
    """A plain HTTP request (stdlib), any status."""
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body)
        headers["Content-Type"] = "application/json"
    if isinstance(body, str):
        body = body.encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return Resp(resp.status, dict(resp.headers), resp.read().decode())
    except urllib.error.HTTPError as err:
        return Resp(err.code, dict(err.headers), err.read().decode())


def write_config(folder: Path, gateway_port: int) -> Path:
    """dev/isense.dev.toml with this run's ledger, secret, port and drain budget, plus
    a second model that no worker ever serves."""
    assert "vllm_args = [\n" in (REPO / "dev" / "isense.dev.toml").read_text()
    out, section = [], None
    for line in (REPO / "dev" / "isense.dev.toml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        key = stripped.split("=")[0].strip() if "=" in stripped and not stripped.startswith("#") else None
        if section == "[ledger]" and key == "path":
            line = f'path = "{folder / "ledger.db"}"'
        elif section == "[secrets]" and key == "dir":
            line = f'dir = "{folder / "secrets"}"'
        elif section == "[gateway]" and key == "listen":
            line = f'listen = "127.0.0.1:{gateway_port}"'
        elif section == "[gateway]" and key == "advertise_url":
            line = f'advertise_url = "http://127.0.0.1:{gateway_port}"'
        elif section == "[slurm]" and key == "drain_seconds":
            line = f"drain_seconds = {DRAIN_SECONDS}"
        elif section == "[worker]" and key == "heartbeat_seconds":
            line = "heartbeat_seconds = 2"
        out.append(line)
        if section == "[[models]]" and key == "vllm_args":
            # A few sequences at a time: requests queue up in vLLM (the tiny model is
            # otherwise done in a blink), yet a test's few streams all run at once.
            out.append('  "--max-num-seqs", "4",')
    out += [
        "",
        "[[models]]",
        f'name = "{SPARE}"',
        'path = "/var/lib/isense-dev/models/tiny-llama"',
        "gpus = 1",
        "context_length = 512",
        "price = { input_per_mtok = 0.2, output_per_mtok = 0.8, cached_input_per_mtok = 0.1 }",
    ]
    path = folder / "isense.toml"
    path.write_text("\n".join(out) + "\n")
    return path


class Site:
    """One test run's config, secret, ledger and client key."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "secrets").mkdir(mode=0o700)
        self.secret_hex = os.urandom(32).hex()
        (folder / "secrets" / "worker.key").write_text(self.secret_hex + "\n")
        self.secret = self.secret_hex.encode()
        self.port = free_port()
        self.config = write_config(folder, self.port)
        self.ledger_path = folder / "ledger.db"
        with Ledger.open(self.ledger_path) as ledger:
            _, self.key = ledger.create_key("tests")

    def rows(self, ids=None) -> dict[str, dict]:
        with sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM requests").fetchall()
        found = {r["id"]: dict(r) for r in rows}
        return found if ids is None else {i: found[i] for i in ids if i in found}


class Gateway:
    """`isense gateway` as a child process."""

    def __init__(self, site: Site, port: int | None = None):
        self.site = site
        self.port = port or site.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(site.folder / f"gateway-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [str(ISENSE), "--config", str(site.config), "gateway", "--listen", f"127.0.0.1:{self.port}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._ready, 120, "the gateway to answer")

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"gateway exited: {self.log_text()}"
        try:
            return http("GET", f"{self.url}/v1/models", headers=self.auth(), timeout=2).status_code == 200
        except OSError:
            return False

    def auth(self, key: str | None = None) -> dict:
        return {"Authorization": f"Bearer {key or self.site.key}"}

    def client(self, **kw) -> openai.OpenAI:
        # A generous read timeout: a request queued behind others on a slow, busy host
        # may wait minutes for its first byte, and that is not what these tests test.
        kw = {"max_retries": 0, "timeout": CLIENT_TIMEOUT, **kw}
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.site.key, **kw)

    def registry(self) -> dict:
        return http("GET", f"{self.url}/internal/workers", timeout=30).json()

    def worker(self, job_id: str) -> dict | None:
        return next((w for w in self.registry()["workers"] if w["job_id"] == job_id), None)

    def control(self, action: str, payload: dict, token: str | None = None) -> Resp:
        token = token or worker_token(self.site.secret, payload["job_id"])
        return http(
            "POST",
            f"{self.url}/internal/workers/{action}",
            json_body=payload,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

    def log_text(self) -> str:
        return (self.site.folder / f"gateway-{self.port}.log").read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log.close()


def error_of(resp: Resp) -> dict:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["message"]
    return body["error"]
