"""The ledger's schema: versioned, additive migrations.

Rules for new migrations: append a (version, function) pair, never edit a released
one; only add tables, columns (nullable or with a default) and indexes. Allowed values
(request status, worker state, end reason) are checked in Python, not with CHECK
constraints, because SQLite cannot widen a CHECK without rebuilding the table.

DDL is plain SQL run through sqlite-utils' execute: its table helpers commit on their
own in some versions, which would break the one-transaction-per-migration rule.
"""

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from isense_slurm.errors import ConfigError

CREATED_BY = "isense-slurm"


def _v1_serving(db: Database) -> None:
    """meta, API keys, price book, workers, requests (the serving issue)."""
    for sql in _v1_meta_keys_prices() + _v1_workers_requests():
        db.execute(sql)
    db.execute(
        "INSERT INTO meta(key, value) VALUES ('created_by', ?), ('created_at', ?), ('keys_generation', '0')",
        [CREATED_BY, repr(time.time())],
    )


def _v1_meta_keys_prices() -> list[str]:
    """v1's DDL, part one (released: never edit, SQLite keeps this text)."""
    return [
        """CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""",
        # AUTOINCREMENT: an id, once revoked, is never handed to another key.
        """CREATE TABLE api_keys (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            revoked_at REAL
        )""",
        "CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL",
        # One row per price change; the price at time t is the latest row with
        # effective_from <= t. Rates in integer nanos per million tokens.
        """CREATE TABLE prices (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            currency TEXT NOT NULL,
            input_nanos_per_mtok INTEGER NOT NULL,
            output_nanos_per_mtok INTEGER NOT NULL,
            cached_nanos_per_mtok INTEGER NOT NULL,
            effective_from REAL NOT NULL
        )""",
        "CREATE INDEX prices_model_time ON prices(model, effective_from)",
    ]


def _v1_workers_requests() -> list[str]:
    """v1's DDL, part two (released: never edit, SQLite keeps this text)."""
    return [
        # One row per run of a worker job: Slurm requeues a preempted job under the
        # same job id, and each run's lent time counts on its own.
        """CREATE TABLE workers (
            id INTEGER PRIMARY KEY,
            job_id TEXT NOT NULL,
            run INTEGER NOT NULL DEFAULT 0,
            state TEXT NOT NULL,
            reason TEXT,
            model TEXT,
            node TEXT,
            gpus INTEGER,
            gpu_ids TEXT,
            address TEXT,
            started_at REAL NOT NULL,
            serving_at REAL,
            draining_at REAL,
            ended_at REAL,
            updated_at REAL NOT NULL,
            UNIQUE (job_id, run)
        )""",
        "CREATE INDEX workers_state ON workers(state)",
        # key_id carries no FOREIGN KEY on purpose: a request row must be written even
        # if its key was removed by hand; revenue never depends on the key row.
        """CREATE TABLE requests (
            id TEXT PRIMARY KEY,
            ts REAL NOT NULL,
            key_id INTEGER,
            model TEXT NOT NULL,
            job_id TEXT,
            node TEXT,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            cached_tokens INTEGER NOT NULL,
            status TEXT NOT NULL,
            latency_ms REAL,
            streamed INTEGER NOT NULL,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 1,
            currency TEXT,
            input_nanos_per_mtok INTEGER,
            output_nanos_per_mtok INTEGER,
            cached_nanos_per_mtok INTEGER,
            gross_nanos INTEGER NOT NULL,
            operator_nanos INTEGER NOT NULL
        )""",
        "CREATE INDEX requests_ts ON requests(ts)",
        "CREATE INDEX requests_model ON requests(model, ts)",
        "CREATE INDEX requests_key ON requests(key_id, ts)",
        "CREATE INDEX requests_job ON requests(job_id)",
    ]


def _v2_reclaims_exports(db: Database) -> None:
    """Reclaim timings (the scheduler issue) and the export ledger (the reports issue)."""
    db.execute(
        """CREATE TABLE reclaims (
            id INTEGER PRIMARY KEY,
            training_job_id TEXT NOT NULL,
            node TEXT,
            worker_job_id TEXT,
            submit_time REAL,
            sigterm_time REAL,
            gpus_free_time REAL,
            start_time REAL,
            created_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX reclaims_training_job ON reclaims(training_job_id)")
    db.execute("CREATE INDEX reclaims_worker_job ON reclaims(worker_job_id)")
    # One entry per exported (period, format): a re-run finds it and writes nothing new.
    db.execute(
        """CREATE TABLE exports (
            id INTEGER PRIMARY KEY,
            period TEXT NOT NULL,
            format TEXT NOT NULL,
            path TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            rows INTEGER NOT NULL,
            totals TEXT NOT NULL,
            created_at REAL NOT NULL,
            UNIQUE (period, format)
        )"""
    )


def _v3_node_sums_index(db: Database) -> None:
    """Request sums per node over a time range from the index alone (`isense status`
    reads today's tokens and money per node: about 10x faster than requests_ts plus a
    GROUP BY on a busy day). Building it on a large ledger takes a while, once."""
    db.execute(
        "CREATE INDEX requests_node_ts ON requests(node, ts, prompt_tokens, completion_tokens, "
        "cached_tokens, gross_nanos, operator_nanos)"
    )


def _v4_limits(db: Database) -> None:
    """Limits per key and per key group (the budgets issue): a key's group, one row of
    limits per subject ('key:<id>' or 'group:<name>'; NULL: no limit), a counter the
    gateways poll to reload them, and an index that sums a key's spend over a time range
    from the index alone (the gateways read it every second for budgeted keys)."""
    db.execute("ALTER TABLE api_keys ADD COLUMN key_group TEXT")
    db.execute("CREATE INDEX api_keys_group ON api_keys(key_group)")
    db.execute(
        """CREATE TABLE limits (
            subject TEXT PRIMARY KEY,
            rpm INTEGER,
            tpm INTEGER,
            concurrent INTEGER,
            budget_day_nanos INTEGER,
            budget_month_nanos INTEGER,
            budget_total_nanos INTEGER,
            updated_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX requests_key_spend ON requests(key_id, ts, gross_nanos)")
    db.execute("INSERT INTO meta(key, value) VALUES ('limits_generation', '0')")


def _v5_worker_starts(db: Database) -> None:
    """How each worker run's start went (issue 13): the worker's own step times and
    vLLM's durations, reported once on registering. Job start and registration are the
    run's started_at and serving_at in `workers`."""
    db.execute(
        """CREATE TABLE worker_starts (
            job_id TEXT NOT NULL,
            run INTEGER NOT NULL,
            worker_up REAL,
            vllm_spawned REAL,
            healthy REAL,
            probed REAL,
            weights_s REAL,
            engine_s REAL,
            PRIMARY KEY (job_id, run)
        )"""
    )


MIGRATIONS: list[tuple[int, Callable[[Database], None]]] = [
    (1, _v1_serving),
    (2, _v2_reclaims_exports),
    (3, _v3_node_sums_index),
    (4, _v4_limits),
    (5, _v5_worker_starts),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def read_version(db: Database, path: Path) -> int:
    """0 for an empty database; ConfigError for one that is not an isense ledger."""
    tables = db.table_names()
    if not tables:
        return 0
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    except sqlite3.Error:  # a foreign 'meta' table with other columns
        meta = {}
    if meta.get("created_by") != CREATED_BY:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise ConfigError(
            f"{path}: an SQLite database but not an isense ledger (tables: {shown}); point [ledger] path at a new file"
        )
    try:
        return int(meta["schema_version"])
    except (KeyError, ValueError):
        raise ConfigError(f"{path}: isense ledger without a valid schema_version in table meta") from None


def migrate(db: Database, path: Path, target: int | None = None) -> int:
    """Apply pending migrations up to `target` (default: latest). Call inside a transaction.

    The version is read again here, under the write lock, so two processes opening a
    new ledger at once do not both run the same migration.
    """
    target = LATEST_VERSION if target is None else target
    current = read_version(db, path)
    for version, step in MIGRATIONS:
        if current < version <= target:
            step(db)
            current = version
    db.execute(
        "INSERT INTO meta(key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [str(current)],
    )
    return current
