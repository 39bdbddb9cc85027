"""Read-only queries behind `isense earnings`: request sums and lent worker time.

Reports never write: the ledger is opened with SQLite's mode=ro, so not a byte of the
database file changes (SQLite may still create the -wal/-shm side files of a WAL
database, as any reader does; it gives them the database file's owner).
Time ranges are half-open, ts >= start AND ts < end, as exports use them.
"""

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlite_utils import Database

from isense_slurm.errors import ConfigError
from isense_slurm.meter import schema
from isense_slurm.meter.connection import BUSY_TIMEOUT_MS
from isense_slurm.meter.rows import RequestTotals

REQUEST_GROUPS = ("node", "model", "client")
_SUMS = (
    "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
    "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(gross_nanos), 0), COALESCE(SUM(operator_nanos), 0)"
)


@dataclass(frozen=True)
class WorkerRun:
    """One run of a worker job, as far as lent GPU time goes."""

    model: str | None
    node: str | None
    gpus: int | None
    started_at: float
    ended_at: float | None  # None: still running
    serving_at: float | None = None  # None: never served (a start that did not finish)


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to an isense ledger; ConfigError (exit 2) naming the path otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: the ledger path is a directory, not a file")
    if not path.exists():
        raise ConfigError(f"{path}: no ledger here (check [ledger] path or --ledger)")
    try:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    except sqlite3.Error as err:
        raise ConfigError(f"{path}: cannot open the ledger ({err})") from None
    try:
        version = schema.read_version(Database(conn), path)
        if version == 0:
            raise ConfigError(f"{path}: an empty database, not an isense ledger")
        if version > schema.LATEST_VERSION:
            raise ConfigError(
                f"{path}: ledger schema version {version} is newer than this isense "
                f"(knows up to {schema.LATEST_VERSION}); upgrade isense-slurm"
            )
    except ConfigError:
        conn.close()
        raise
    except sqlite3.DatabaseError as err:
        conn.close()
        text = "not an SQLite database" if "not a database" in str(err) else f"cannot read the ledger ({err})"
        raise ConfigError(f"{path}: {text}") from None
    return conn


def earliest(conn: sqlite3.Connection) -> float | None:
    """The first request or lent time in the ledger (None when it holds neither)."""
    first_request = conn.execute("SELECT MIN(ts) FROM requests").fetchone()[0]
    first_worker = conn.execute("SELECT MIN(started_at) FROM workers").fetchone()[0]
    times = [t for t in (first_request, first_worker) if t is not None]
    return min(times) if times else None


def request_sums(
    conn: sqlite3.Connection, start: float, end: float, group: str | None
) -> dict[str | None, RequestTotals]:
    """Sums of requests with start <= ts < end: {group value: RequestTotals}.

    group None: one entry under the key None. 'client': keyed by the key's NAME (a
    client that rotated keys is one client; a key id with no key row shows as 'key#ID',
    a request without a key as None).
    """
    where = "WHERE ts >= ? AND ts < ?"
    if group is None:
        row = conn.execute(f"SELECT {_SUMS} FROM requests {where}", [start, end]).fetchone()
        return {None: RequestTotals(*row)} if row[0] else {}
    if group not in REQUEST_GROUPS:
        raise ValueError(f"cannot group requests by {group!r}")
    column = "key_id" if group == "client" else group
    rows = conn.execute(f"SELECT {column}, {_SUMS} FROM requests {where} GROUP BY {column}", [start, end]).fetchall()
    if group != "client":
        return {row[0]: RequestTotals(*row[1:]) for row in rows}
    names = key_names(conn)
    merged: dict[str | None, RequestTotals] = {}
    for key_id, *sums in rows:
        name = None if key_id is None else names.get(key_id, f"key#{key_id}")
        merged[name] = add_totals(merged.get(name, RequestTotals()), RequestTotals(*sums))
    return merged


def key_names(conn: sqlite3.Connection) -> dict[int, str]:
    """key id -> key name (names only: hashes never leave the meter)."""
    return dict(conn.execute("SELECT id, name FROM api_keys").fetchall())


def worker_runs(conn: sqlite3.Connection, start: float, end: float) -> list[WorkerRun]:
    """Worker runs whose lent time overlaps [start, end)."""
    rows = conn.execute(
        "SELECT model, node, gpus, started_at, ended_at, serving_at FROM workers "
        "WHERE started_at < ? AND (ended_at IS NULL OR ended_at > ?) ORDER BY started_at, id",
        [end, start],
    ).fetchall()
    return [WorkerRun(*row) for row in rows]


def currencies(conn: sqlite3.Connection, start: float, end: float) -> set[str]:
    """Currencies recorded on the requests of [start, end) (to catch a mixed-currency sum)."""
    rows = conn.execute(
        "SELECT DISTINCT currency FROM requests WHERE ts >= ? AND ts < ? AND currency IS NOT NULL", [start, end]
    ).fetchall()
    return {row[0] for row in rows}


class TotalsLike(Protocol):
    """The six sums of RequestTotals (metrics_queries.RequestGroup has them too)."""

    @property
    def requests(self) -> int: ...

    @property
    def prompt_tokens(self) -> int: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def cached_tokens(self) -> int: ...

    @property
    def gross_nanos(self) -> int: ...

    @property
    def operator_nanos(self) -> int: ...


def add_totals(a: TotalsLike, b: TotalsLike) -> RequestTotals:
    return RequestTotals(*(x + y for x, y in zip(_fields(a), _fields(b))))


def _fields(t: TotalsLike) -> tuple[int, ...]:
    return (t.requests, t.prompt_tokens, t.completion_tokens, t.cached_tokens, t.gross_nanos, t.operator_nanos)
