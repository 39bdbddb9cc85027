"""`isense gateway` refuses bad input with one line, and starts and stops cleanly."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ISENSE = Path(sys.executable).with_name("isense")


def config(tmp_path: Path, port: int) -> Path:
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    text = text.replace('path = "/var/lib/isense-dev/ledger.db"', f'path = "{tmp_path / "ledger.db"}"')
    text = text.replace('dir = "/var/lib/isense-dev/secrets"', f'dir = "{tmp_path / "secrets"}"')
    text = text.replace('listen = "127.0.0.1:8000"', f'listen = "127.0.0.1:{port}"')
    assert str(tmp_path) in text
    path = tmp_path / "isense.toml"
    path.write_text(text)
    return path


def isense(*args, timeout=30):
    return subprocess.run([str(ISENSE), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bad_listen_is_a_usage_error(tmp_path):
    done = isense("--config", config(tmp_path, free_port()), "gateway", "--listen", "8000")
    assert done.returncode == 2
    assert done.stderr.startswith("isense: --listen:") and done.stderr.count("\n") == 1


def test_busy_port_is_one_line_and_exit_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = isense("--config", config(tmp_path, port), "gateway")
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("isense: cannot listen on 127.0.0.1:") and "Traceback" not in done.stderr


def test_starts_makes_its_secret_and_stops_on_sigterm(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [str(ISENSE), "--config", str(config(tmp_path, port)), "gateway"], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "the gateway did not listen within 30 s"
                time.sleep(0.1)
        secret = tmp_path / "secrets" / "worker.key"
        assert secret.exists() and oct(secret.stat().st_mode & 0o777) == "0o640"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stderr.read()
    assert "listening on 127.0.0.1:" in log and "stopped; ledger rows flushed" in log
    assert os.path.exists(tmp_path / "ledger.db")
