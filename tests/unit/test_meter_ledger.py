"""The ledger file: creation, refusal of foreign files, migrations, prices, workers, totals."""

import sqlite3
import threading
from dataclasses import dataclass

import pytest
from sqlite_utils import Database

from isense_slurm.errors import ConfigError, UsageError
from isense_slurm.meter import schema
from isense_slurm.meter.connection import connect, transaction
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float


@dataclass(frozen=True)
class Model:
    name: str
    price: Price


def tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_open_creates_folder_wal_ledger_at_latest_version(tmp_path):
    path = tmp_path / "a" / "b" / "ledger.db"
    with Ledger.open(path) as ledger:
        assert ledger.schema_version() == schema.LATEST_VERSION
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    assert meta["created_by"] == "isense-slurm"
    assert int(meta["schema_version"]) == schema.LATEST_VERSION
    assert {"meta", "api_keys", "prices", "workers", "requests", "reclaims", "exports"} <= tables(path)
    # reopening changes nothing
    Ledger.open(path).close()
    assert dict(conn.execute("SELECT key, value FROM meta")) == meta


def test_an_empty_file_becomes_a_ledger(tmp_path):
    path = tmp_path / "ledger.db"
    path.touch()
    with Ledger.open(path) as ledger:
        assert ledger.schema_version() == schema.LATEST_VERSION


def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    content = b"these are not the tables you are looking for\n" * 100
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        Ledger.open(path)
    assert str(path) in str(err.value) and "not an SQLite database" in str(err.value)
    assert path.read_bytes() == content


def test_a_foreign_sqlite_database_is_refused_untouched(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users(name) VALUES ('x')")
    before = path.read_bytes()
    with pytest.raises(ConfigError) as err:
        Ledger.open(path)
    assert str(path) in str(err.value) and "not an isense ledger" in str(err.value)
    assert "users" in str(err.value)
    assert path.read_bytes() == before
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_foreign_meta_table_is_not_taken_for_a_ledger(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE meta (k TEXT, v TEXT)")
    with pytest.raises(ConfigError, match="not an isense ledger"):
        Ledger.open(path)


def test_a_ledger_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(schema.LATEST_VERSION + 1)])
    with pytest.raises(ConfigError) as err:
        Ledger.open(path)
    assert str(path) in str(err.value) and "newer" in str(err.value)


def test_directory_and_missing_paths(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        Ledger.open(tmp_path)
    missing = tmp_path / "nope.db"
    with pytest.raises(ConfigError, match="no ledger here"):
        Ledger.open(missing, create=False)
    assert not missing.exists()


def test_migration_from_v1_keeps_the_data(tmp_path):
    path = tmp_path / "v1.db"
    conn = connect(path)
    db = Database(conn)
    with transaction(conn):
        assert schema.migrate(db, path, target=1) == 1
    conn.execute("INSERT INTO api_keys(name, prefix, hash, created_at) VALUES ('old', 'isk-old', 'abc', 1.0)")
    conn.execute(
        "INSERT INTO requests(id, ts, model, prompt_tokens, completion_tokens, cached_tokens, status, "
        "streamed, gross_nanos, operator_nanos) VALUES ('r1', 1.0, 'm', 10, 20, 0, 'ok', 0, 123, 86)"
    )
    conn.close()
    assert "reclaims" not in tables(path) and "exports" not in tables(path)

    with Ledger.open(path) as ledger:
        assert ledger.schema_version() == schema.LATEST_VERSION
        assert [k.name for k in ledger.list_keys()] == ["old"]
        totals = ledger.request_totals()
        assert (totals.requests, totals.completion_tokens, totals.gross_nanos) == (1, 20, 123)
    assert {"reclaims", "exports"} <= tables(path)
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(reclaims)")}
    assert {"training_job_id", "submit_time", "sigterm_time", "gpus_free_time", "start_time"} <= columns


def test_a_failing_migration_leaves_the_ledger_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "v1.db"
    conn = connect(path)
    with transaction(conn):
        schema.migrate(Database(conn), path, target=1)
    conn.close()

    def broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(schema, "MIGRATIONS", [schema.MIGRATIONS[0], (2, broken)])
    with pytest.raises(RuntimeError):
        Ledger.open(path)
    assert "half_done" not in tables(path)
    assert dict(sqlite3.connect(path).execute("SELECT key, value FROM meta"))["schema_version"] == "1"


def test_prices_are_recorded_only_when_they_change(tmp_path):
    with Ledger.open(tmp_path / "l.db") as ledger:
        models = [Model("a", Price(0.1, 0.4, 0.05)), Model("b", Price(1, 2, 0.5))]
        assert ledger.sync_prices(models, "USD", at=100.0) == ["a", "b"]
        assert ledger.sync_prices(models, "USD", at=200.0) == []
        assert ledger.sync_prices({"a": Price(0.2, 0.4, 0.05)}, "USD", at=300.0) == ["a"]
        assert ledger.sync_prices({"b": Price(1, 2, 0.5)}, "EUR", at=400.0) == ["b"]

        now = ledger.price_for("a")
        assert (now.input_per_mtok, now.output_per_mtok, now.cached_input_per_mtok) == (0.2, 0.4, 0.05)
        assert ledger.price_for("a", at=250.0).input_per_mtok == 0.1
        assert ledger.price_for("a", at=50.0) is None
        assert ledger.price_for("b").currency == "EUR"
        assert ledger.price_for("unknown") is None


def test_worker_lifecycle_keeps_first_times_and_moves_forward(tmp_path):
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.worker_event("101", state="lent", model="tiny", gpus=4, at=10.0)
        w = ledger.worker_event("101", state="serving", node="n1", gpus="0,1,2,3", address="http://n1:9000", at=20.0)
        assert (w.state, w.started_at, w.serving_at, w.gpus, w.gpu_ids) == ("serving", 10.0, 20.0, 4, "0,1,2,3")
        w = ledger.worker_event("101", state="serving", at=25.0)  # re-registration
        assert w.serving_at == 20.0
        w = ledger.worker_event("101", state="draining", reason="preempted", at=30.0)
        w = ledger.worker_event("101", state="serving", at=31.0)  # a late report
        assert (w.state, w.draining_at) == ("draining", 30.0)
        w = ledger.worker_event("101", state="ended", reason="time_limit", at=32.0)
        assert (w.state, w.reason, w.ended_at) == ("ended", "time_limit", 32.0)
        w = ledger.worker_event("101", state="ended", reason="lost", at=40.0)  # duplicate end
        assert (w.reason, w.ended_at, w.run) == ("time_limit", 32.0, 0)
        assert ledger.workers(active_only=True) == []
        assert ledger.worker_event("101", state="draining", at=41.0).state == "ended"


def test_a_requeued_job_gets_a_new_run(tmp_path):
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.worker_event(7, state="serving", model="tiny", gpus=2, node="n1", at=1.0)
        ledger.worker_event(7, state="ended", reason="preempted", at=2.0)
        w = ledger.worker_event(7, state="serving", node="n3", at=5.0)
        assert (w.run, w.state, w.model, w.gpus, w.node, w.started_at) == (1, "serving", "tiny", 2, "n3", 5.0)
        runs = ledger.workers()
        assert [(r.run, r.state, r.reason) for r in runs] == [(0, "ended", "preempted"), (1, "serving", None)]
        assert [r.run for r in ledger.workers(active_only=True)] == [1]


def test_a_late_lent_report_dates_a_run_back_never_forward(tmp_path):
    """A requeued run is first heard of when its worker registers; the controller's
    later 'lent' report with Slurm's start moves the run's start back (not its state)."""
    with Ledger.open(tmp_path / "l.db") as ledger:
        ledger.worker_event(7, state="serving", model="tiny", gpus=2, node="n1", at=1.0)
        ledger.worker_event(7, state="ended", reason="preempted", at=2.0)
        ledger.worker_event(7, state="serving", node="n3", at=30.0)  # run 1 registers
        w = ledger.worker_event(7, state="lent", at=10.0)  # Slurm started run 1 at 10
        assert (w.run, w.state, w.started_at, w.serving_at, w.updated_at) == (1, "serving", 10.0, 30.0, 30.0)
        w = ledger.worker_event(7, state="lent", at=12.0)
        assert w.started_at == 10.0


def test_worker_event_rejects_unknown_states_and_reasons(tmp_path):
    with Ledger.open(tmp_path / "l.db") as ledger:
        with pytest.raises(ValueError):
            ledger.worker_event("1", state="running")
        with pytest.raises(ValueError):
            ledger.worker_event("1", state="ended", reason="bored")
        assert ledger.workers() == []


def test_request_totals_by_period_and_group(tmp_path):
    path = tmp_path / "l.db"
    prices = {"a": Price(1.0, 2.0, 0.5)}
    with RequestWriter(path, prices=prices, operator_share=0.5) as writer:
        for i, (model, ts) in enumerate([("a", 10.0), ("a", 20.0), ("b", 20.0), ("a", 30.0)]):
            writer.submit(RequestRow(f"r{i}", ts, 1, model, "j", "n1", 1000, 100, 0, "ok", 1.0, False))
    with Ledger.open(path) as ledger:
        everything = ledger.request_totals()
        assert (everything.requests, everything.prompt_tokens, everything.completion_tokens) == (4, 4000, 400)
        # each priced row: 1000 x 1.0 + 100 x 2.0 per Mtok = 1200 per Mtok = 1_200_000 nanos
        assert (everything.gross_nanos, everything.operator_nanos) == (3_600_000, 1_800_000)
        assert ledger.request_totals(since=20.0, until=30.0).requests == 2
        by_model = ledger.request_totals(group_by="model")
        assert by_model["a"].requests == 3 and by_model["b"].gross_nanos == 0
        assert ledger.request_totals(since=1e9).requests == 0
        with pytest.raises(UsageError, match="group"):
            ledger.request_totals(group_by="ts; DROP TABLE requests")


def test_a_second_writer_waits_for_the_lock_instead_of_failing(tmp_path):
    path = tmp_path / "l.db"
    first, second = Ledger.open(path), Ledger.open(path)
    outcome = {}

    def create():
        try:
            outcome["key"] = second.create_key("alice")[0]
        except Exception as err:  # "database is locked" without busy_timeout
            outcome["error"] = err

    with transaction(first.db.conn):
        first.db.execute("UPDATE meta SET value = value WHERE key = 'created_by'")
        thread = threading.Thread(target=create)
        thread.start()
        thread.join(0.3)  # the second writer is now blocked on the lock
        assert thread.is_alive() and not outcome
    thread.join()
    assert outcome.get("key") is not None and outcome["key"].name == "alice", outcome
    first.close()
    second.close()
