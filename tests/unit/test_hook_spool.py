"""The hooks' event spool, and delivery when the daemon cannot be reached."""

import json
import socket

from isense_slurm.hooks.run import deliver
from isense_slurm.hooks.spool import Spool


def ev(i, node="n1"):
    return {"kind": "gpus_free", "node": node, "gpus": [0], "time": 1700000000.0 + i, "job_id": str(i)}


def test_put_then_take_returns_everything_in_order_and_empties(tmp_path):
    spool = Spool(tmp_path / "spool", "n1")
    assert spool.take() == []
    spool.put([ev(1), ev(2)])
    spool.put([ev(3)])
    assert [e["job_id"] for e in spool.take()] == ["1", "2", "3"]
    assert spool.take() == []
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert spool.path.stat().st_mode & 0o777 == 0o600


def test_spool_keeps_only_the_newest_lines(tmp_path):
    spool = Spool(tmp_path, "n1", max_lines=5)
    assert spool.put([ev(i) for i in range(4)]) == 0
    assert spool.put([ev(i) for i in range(4, 8)]) == 3
    assert [e["job_id"] for e in spool.peek()] == ["3", "4", "5", "6", "7"]


def test_one_file_per_node_and_torn_lines_are_skipped(tmp_path):
    a, b = Spool(tmp_path, "n1"), Spool(tmp_path, "n/2")
    a.put([ev(1)])
    b.put([ev(2, "n/2")])
    assert a.path != b.path and b.path.name == "events-n_2.jsonl"
    with open(a.path, "a") as f:
        f.write('{"kind": "gpus_fr')  # a crash mid-write
    a.put([ev(3)])
    assert [e["job_id"] for e in a.take()] == ["1", "3"]
    assert [e["job_id"] for e in b.take()] == ["2"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once closed


def test_undeliverable_events_are_spooled_with_the_older_ones(tmp_path):
    spool = Spool(tmp_path, "n1")
    spool.put([ev(1)])
    url = f"http://127.0.0.1:{closed_port()}"
    note = deliver([ev(2)], spool, url, "token", timeout_s=0.5)
    assert note.startswith("spooled 2 event(s)") and "cannot connect" in note
    assert [e["job_id"] for e in spool.peek()] == ["1", "2"]


def test_without_config_events_wait_in_the_spool(tmp_path):
    spool = Spool(tmp_path, "n1")
    note = deliver([ev(1)], spool, None, None, "no config")
    assert note == "spooled 1 event(s): no config"
    assert json.loads(spool.path.read_text())["job_id"] == "1"
    assert deliver([], Spool(tmp_path, "n2"), None, None) == "nothing to send"
