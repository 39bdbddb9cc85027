"""No crash loops, as the reports see it: `isense status` and `isense doctor` show the
(node, model) pairs the running controller holds back, and doctor tries the worker's and
vLLM's executables as the service account."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from doctor_world import healthy
from isense_slurm.admin import doctor_exec
from isense_slurm.admin.doctor import check
from isense_slurm.config import load_config
from isense_slurm.report import status_view
from isense_slurm.report.controller_state import controller_url, held_back, read_controller
from isense_slurm.report.status_model import HeldBack, LedgerFigures, build_status
from isense_slurm.slurm import Node, Partition

REPO = Path(__file__).resolve().parents[2]
AT = datetime(2026, 5, 6, 12, 0, tzinfo=UTC)
HELD = {
    "node": "n2",
    "model": "tiny-llama",
    "failures": 3,
    "state": "backing-off",
    "backoff_seconds": 60.0,
    "until": AT.timestamp() + 60,
    "trying": None,
    "last_job_id": "123",
    "last_reason": "FAILED, exit 3: vLLM exited with code 1 before becoming healthy",
    "text": "3 workers ended before serving in a row (last: job 123, FAILED, exit 3: vLLM exited with code 1"
    " before becoming healthy); back-off 60 s, one worker may try at 14:01:00",
}


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "dev" / "isense.dev.toml")


def with_listen(cfg, host, port):
    return replace(cfg, gateway=replace(cfg.gateway, listen_host=host, listen_port=port))


class Daemon:
    """A stand-in for `isense serve`'s GET /internal/controller."""

    def __init__(self, body):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                outer.paths.append(self.path)
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_controller_is_read_on_loopback_and_absent_is_not_an_error(cfg):
    assert controller_url(with_listen(cfg, "0.0.0.0", 8000)) == "http://127.0.0.1:8000/internal/controller"
    assert controller_url(with_listen(cfg, "::", 8000)) == "http://[::1]:8000/internal/controller"
    daemon = Daemon({"ticks": 3, "held_back": [HELD, {"node": "broken"}]})
    try:
        state, why = read_controller(with_listen(cfg, "0.0.0.0", daemon.port))
    finally:
        daemon.close()
    assert why == "" and daemon.paths == ["/internal/controller"]
    (h,) = held_back(state)
    assert (h.node, h.model, h.failures, h.last_job_id, h.until) == (
        "n2",
        "tiny-llama",
        3,
        "123",
        datetime.fromtimestamp(AT.timestamp() + 60, UTC),
    )
    state, why = read_controller(with_listen(cfg, "127.0.0.1", daemon.port), timeout=0.5)
    assert state is None and why.startswith("no isense serve answers at http://127.0.0.1:")
    assert held_back(None) == []


def status_with_held(view="node"):
    nodes = [Node(f"n{i}", "IDLE", gpus_total=4, partitions=("train", "inference")) for i in (1, 2)]
    held = [
        HeldBack("n2", "tiny-llama", 3, "backing-off", AT, "123", HELD["last_reason"], HELD["text"]),
        HeldBack("n9", "tiny-llama", 3, "backing-off", AT, "124", "x", "y"),
    ]  # not a node shown
    return build_status(
        nodes,
        [],
        [Partition("train", ("n1", "n2"), is_default=True)],
        LedgerFigures(),
        lend_partition="inference",
        service_account="isense",
        currency="USD",
        at=AT,
        day_start=AT,
        view=view,
        held_back=held,
    )


def test_status_counts_held_pairs_in_workers_and_says_why():
    report = status_with_held()
    assert [r.held for r in report.rows] == [(), (("n2", "tiny-llama"),)]
    plain = status_view.to_plain(report).splitlines()
    assert plain[2].split()[:1] == ["n2"] and " held " in f" {plain[2]} "
    assert status_view.held_lines(report) == [f"held back: tiny-llama on n2: {HELD['text']}"]
    doc = json.loads(status_view.to_json(report))
    assert [(h["node"], h["model"], h["last_job_id"]) for h in doc["held_back"]] == [("n2", "tiny-llama", "123")]
    assert "held" in status_view.summary(report)
    part = status_with_held("partition")
    assert status_view.worker_text(part.rows[0].worker_states()) == "held"


def test_doctor_fails_on_executables_that_cannot_start_and_on_held_nodes(cfg):
    facts = healthy()
    facts.executables = [
        doctor_exec.ExecCheck("worker executable", "/opt/isense/bin/isense worker --help"),
        doctor_exec.ExecCheck("vLLM executable", "/bin/false --version", "exit 1: no output"),
    ]
    facts.held_back = [HELD]
    lines = [f.line() for f in check(cfg, facts) if f.level != "OK"]
    assert lines == [
        "FAIL vLLM executable cannot start as isense: /bin/false --version: exit 1: no output -> fix [worker]"
        " vllm_executable (the vLLM of the nodes' virtualenv), or its permissions",
        f"FAIL controller holds back tiny-llama on n2: {HELD['text']} -> read /var/lib/isense-dev/jobs/isense-123.out"
        " and fix the cause; one worker tries after the back-off, and one that serves ends it",
    ]
    facts.held_back = []
    facts.executables = []
    facts.executables_skipped = "doctor runs as alice, not root or isense"
    findings = check(cfg, facts)
    assert [f.line() for f in findings if f.level != "OK"] == [
        "WARN worker and vLLM executables not tried as isense: doctor runs as alice, not root or isense"
        " -> run isense doctor as root"
    ]
    assert "isense serve answers: no node held back for failing workers" in [f.what for f in findings]


def test_run_check_gives_one_line_why(tmp_path):
    assert doctor_exec.run_check("x", [], ["/bin/true"]).problem is None
    script = tmp_path / "fails"
    script.write_text("#!/bin/sh\necho starting\necho 'first line' >&2\necho 'cannot open libcuda' >&2\nexit 3\n")
    script.chmod(0o755)
    assert doctor_exec.run_check("x", [], [str(script)]).problem == "exit 3: cannot open libcuda"
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    assert doctor_exec.run_check("x", [], [str(slow)], timeout=0.2).problem == "no answer within 0.2 s"
    assert doctor_exec.run_check("x", [], [str(tmp_path / "missing")]).problem.endswith("No such file or directory")


def test_vllm_is_checked_through_its_interpreter_or_with_version(cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(doctor_exec, "as_account", lambda account: [])
    script = tmp_path / "vllm"
    script.write_text("#!/usr/bin/env python3\nraise SystemExit('would be slow')\n")
    script.chmod(0o755)
    isense = tmp_path / "isense"
    isense.write_text("#!/bin/sh\nexit 0\n")
    isense.chmod(0o755)
    vcfg = replace(cfg, worker=replace(cfg.worker, vllm_executable=str(script)))
    checks, skipped = doctor_exec.check_executables(vcfg, str(isense))
    assert skipped is None and [c.what for c in checks] == ["worker executable", "vLLM executable"]
    assert checks[0].problem is None
    assert checks[1].command.startswith(f"{script} (with ") and checks[1].problem.startswith("exit 1: no vllm package")
    script.chmod(0o644)
    checks, _ = doctor_exec.check_executables(vcfg, str(isense))
    assert checks[1].problem == f"exit 1: {script} is not executable"
    false = replace(cfg, worker=replace(cfg.worker, vllm_executable="/bin/false"))
    assert doctor_exec.check_executables(false, str(isense))[0][1].problem.startswith("exit 1")
    gone = replace(cfg, worker=replace(cfg.worker, vllm_executable="no-such-vllm-here"))
    assert doctor_exec.check_executables(gone, str(isense))[0][1].problem.startswith("not found in PATH")
