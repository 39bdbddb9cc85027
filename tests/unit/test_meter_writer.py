"""RequestWriter: group commit, durability, idempotence, failures."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from isense_slurm.errors import ConfigError
from isense_slurm.meter import money
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float


PRICES = {"tiny": Price(0.10, 0.40, 0.05), "big": Price(0.60, 1.20, 0.30)}


def row(rid, model="tiny", prompt=100, completion=20, cached=0, **kw) -> RequestRow:
    fields = dict(ts=time.time(), key_id=1, job_id="42", node="n1", status="ok", latency_ms=5.0, streamed=False)
    fields.update(kw)
    return RequestRow(
        id=rid, model=model, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached, **fields
    )


def count(path, where="1", params=()) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM requests WHERE {where}", params).fetchone()[0]


def test_group_commit_from_many_threads_writes_every_row_once(tmp_path):
    path = tmp_path / "ledger.db"
    threads, per_thread = 8, 625  # 5,000 rows
    futures, expected = [], {"prompt": 0, "completion": 0, "cached": 0, "gross": 0, "operator": 0}
    lock = threading.Lock()

    def produce(t):
        mine = []
        for i in range(per_thread):
            prompt, completion = 50 + (i * 7) % 300, 1 + (i * 13) % 200
            cached = (i * 3) % (prompt + 1)
            model = "tiny" if i % 3 else "big"
            mine.append(writer.submit(row(f"t{t}-{i}", model, prompt, completion, cached)))
            gross = money.revenue(PRICES[model], prompt, completion, cached)
            with lock:
                expected["prompt"] += prompt
                expected["completion"] += completion
                expected["cached"] += cached
                expected["gross"] += gross
                expected["operator"] += money.operator_share_nanos(gross, 0.7)
        with lock:
            futures.extend(mine)

    writer = RequestWriter(path, prices=PRICES, operator_share=0.7)
    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all(f.result(timeout=60) is None for f in futures)
    assert len(futures) == 5000
    assert writer.rows_written == 5000
    assert writer.commits < 5000  # rows shared commits
    writer.close()

    with Ledger.open(path) as ledger:
        totals = ledger.request_totals()
    assert totals.requests == 5000
    assert (totals.prompt_tokens, totals.completion_tokens, totals.cached_tokens) == (
        expected["prompt"],
        expected["completion"],
        expected["cached"],
    )
    assert (totals.gross_nanos, totals.operator_nanos) == (expected["gross"], expected["operator"])


def test_a_resolved_row_is_visible_to_another_connection(tmp_path):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.5, interval_s=0.05) as writer:
        for i in range(20):
            writer.submit(row(f"r{i}")).result(timeout=10)
            # no flush, no close: the future alone says the row is committed
            assert count(path, "id = ?", [f"r{i}"]) == 1


def test_the_row_carries_price_snapshot_and_revenue(tmp_path):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.7, currency="USD") as writer:
        writer.submit(row("a", "tiny", prompt=1000, completion=500, cached=200, streamed=True)).result()
        writer.submit(row("b", "nobody-priced-this", prompt=1000, completion=500)).result()
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    a, b = conn.execute("SELECT * FROM requests ORDER BY id").fetchall()
    assert (a["gross_nanos"], a["operator_nanos"], a["currency"], a["streamed"]) == (290_000, 203_000, "USD", 1)
    assert (a["input_nanos_per_mtok"], a["output_nanos_per_mtok"], a["cached_nanos_per_mtok"]) == (
        100_000_000,
        400_000_000,
        50_000_000,
    )
    assert (b["gross_nanos"], b["operator_nanos"], b["input_nanos_per_mtok"]) == (0, 0, None)
    assert b["completion_tokens"] == 500


def test_duplicate_ids_are_written_once(tmp_path):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.7) as writer:
        same_batch = [writer.submit(row("dup", completion=10)) for _ in range(5)]
        assert all(f.result() is None for f in same_batch)
        writer.flush()
        # a retry after the first write committed, with other numbers, changes nothing
        assert writer.submit(row("dup", completion=999)).result() is None
        assert writer.rows_written == 1
    with Ledger.open(path) as ledger:
        totals = ledger.request_totals()
    assert (totals.requests, totals.completion_tokens) == (1, 10)


def test_a_bad_row_fails_alone_and_the_thread_carries_on(tmp_path, caplog):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.7, interval_s=0.05) as writer:
        good = [writer.submit(row(f"g{i}")) for i in range(10)]
        bad = writer.submit(row("bad", node=object()))  # sqlite cannot store it
        more = [writer.submit(row(f"h{i}")) for i in range(10)]
        with pytest.raises(sqlite3.Error):
            bad.result(timeout=10)
        assert all(f.result(timeout=10) is None for f in good + more)
        assert writer.submit(row("after")).result(timeout=10) is None
    assert count(path) == 21 and count(path, "id = 'bad'") == 0
    assert "bad" in caplog.text


def test_invalid_rows_fail_in_the_caller():
    with pytest.raises(ValueError, match="status"):
        row("x", status="fine")
    with pytest.raises(ValueError, match="negative"):
        row("x", prompt=-1)


def test_cancelling_a_future_does_not_withdraw_the_row(tmp_path):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.7, interval_s=0.05) as writer:
        writer.submit(row("cancelled")).cancel()
        writer.flush(timeout=10)
    assert count(path, "id = 'cancelled'") == 1


def test_close_commits_what_is_queued_and_then_refuses(tmp_path):
    path = tmp_path / "ledger.db"
    writer = RequestWriter(path, prices=PRICES, operator_share=0.7, interval_s=0.5)
    futures = [writer.submit(row(f"r{i}")) for i in range(300)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert count(path) == 300
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(row("late"))
    writer.close()  # idempotent


def test_a_foreign_file_is_refused_in_the_caller(tmp_path):
    path = tmp_path / "x.db"
    path.write_text("hello")
    with pytest.raises(ConfigError, match=str(path)):
        RequestWriter(path, prices=PRICES, operator_share=0.7)


CHILD = r"""
import sys, threading, time
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter

writer = RequestWriter(sys.argv[1], prices={}, operator_share=0.7)
out = threading.Lock()

def client(t):
    i = 0
    while True:
        rid = f"t{t}-{i}"
        writer.submit(RequestRow(rid, time.time(), None, "m", None, None, 3, 5, 0, "ok", 1.0, True)).result()
        with out:  # printed only once committed: the client 'has its response'
            sys.stdout.write(rid + "\n")
            sys.stdout.flush()
        i += 1

for t in range(6):
    threading.Thread(target=client, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_kill_9_loses_no_committed_row(tmp_path):
    path = tmp_path / "ledger.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in child.stdout:
            seen.append(line.strip())
            if len(seen) >= 3000:
                break
        os.kill(child.pid, signal.SIGKILL)
        seen.extend(line.strip() for line in child.stdout if line.strip())  # printed before dying
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(seen) >= 3000
    with sqlite3.connect(path) as conn:
        stored = {r[0] for r in conn.execute("SELECT id FROM requests")}
    missing = [rid for rid in seen if rid not in stored]
    assert missing == []


# --- commit_now: a lone row committed on the caller's thread --------------------------------


def test_commit_now_commits_a_lone_row_with_its_revenue(tmp_path):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.7, currency="USD") as writer:
        assert writer.commit_now(row("now", "tiny", prompt=1000, completion=500, cached=200)) is True
        # committed when it returns: another connection sees it, no flush
        assert count(path, "id = 'now' AND gross_nanos = 290000 AND operator_nanos = 203000") == 1
        assert (writer.rows_written, writer.commits) == (1, 1)


def test_commit_now_never_waits_for_a_ledger_being_written(tmp_path):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.7) as writer:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        started = time.monotonic()
        assert writer.commit_now(row("held")) is False
        assert time.monotonic() - started < 5  # not the 10 s busy timeout of the queued path
        future = writer.submit(row("held"))  # the caller's fallback: queued, waits its turn
        other.execute("COMMIT")
        assert future.result(timeout=30) is None
        assert count(path, "id = 'held'") == 1


def test_commit_now_and_a_queued_retry_of_one_id_count_once(tmp_path):
    path = tmp_path / "ledger.db"
    with RequestWriter(path, prices=PRICES, operator_share=0.7) as writer:
        assert writer.commit_now(row("once", completion=10)) is True
        writer.submit(row("once", completion=999)).result(timeout=30)
        assert writer.commit_now(row("once", completion=5)) is True
        assert writer.rows_written == 1
    assert count(path, "id = 'once' AND completion_tokens = 10") == 1


def test_the_thread_checkpoints_what_commit_now_wrote(tmp_path, monkeypatch):
    from isense_slurm.meter import writer as writer_module

    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "ledger.db"

    def rows_in_the_database_file() -> int:  # the file alone, without its -wal
        copy = tmp_path / "copy.db"
        copy.write_bytes(path.read_bytes())
        return count(copy)

    with RequestWriter(path, prices=PRICES, operator_share=0.7) as writer:
        for i in range(4):
            assert writer.commit_now(row(f"c{i}")) is True
        writer.flush()
        assert rows_in_the_database_file() == 0  # still in the WAL only
        assert writer.commit_now(row("c4")) is True  # the 5th: a checkpoint is queued
        writer.flush()  # behind the checkpoint marker
        assert rows_in_the_database_file() == 5


def test_commit_now_refuses_once_closed(tmp_path):
    writer = RequestWriter(tmp_path / "ledger.db", prices=PRICES, operator_share=0.7)
    writer.close()
    assert writer.commit_now(row("late")) is False
