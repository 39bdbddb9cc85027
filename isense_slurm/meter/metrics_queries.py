"""Read-only queries behind the Prometheus /metrics endpoint, cheap enough per scrape.

Request rows are only ever inserted, and SQLite gives each new row a rowid above every
existing one (one writer at a time; no AUTOINCREMENT needed while rows are never
deleted), so a scraper keeps running totals and asks only for rows past the last
rowid it has summed: a rowid range, not a scan of the table. Workers not ended are few
(the workers_state index); reclaims are read from an id on (primary key range).
"""

import sqlite3
from dataclasses import dataclass

_REQUEST_SUMS = (
    "COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
    "COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(gross_nanos), 0), COALESCE(SUM(operator_nanos), 0)"
)


@dataclass(frozen=True)
class RequestGroup:
    model: str
    status: str
    currency: str  # "" when the request was not priced
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    gross_nanos: int
    operator_nanos: int


@dataclass(frozen=True)
class ActiveWorkers:
    state: str  # lent, serving or draining
    model: str | None
    count: int
    gpus: int  # GPUs recorded on these runs
    without_gpus: int  # runs with no GPU count recorded


@dataclass(frozen=True)
class ReclaimTimes:
    id: int
    submit_time: float | None
    start_time: float | None
    created_at: float


def requests_after(conn: sqlite3.Connection, after_rowid: int) -> tuple[int, list[RequestGroup]]:
    """(the highest rowid now, sums per model, status and currency of the rows after `after_rowid`).

    A highest rowid below `after_rowid` (rows deleted, then a VACUUM renumbered them) is
    returned as it is, so the caller can tell and sum again from the start."""
    top = conn.execute("SELECT MAX(rowid) FROM requests").fetchone()[0] or 0
    if top <= after_rowid:
        return top, []
    rows = conn.execute(
        f"SELECT model, status, COALESCE(currency, ''), {_REQUEST_SUMS} FROM requests "
        "WHERE rowid > ? AND rowid <= ? GROUP BY model, status, COALESCE(currency, '')",
        [after_rowid, top],
    ).fetchall()
    return top, [RequestGroup(*row) for row in rows]


def active_workers(conn: sqlite3.Connection) -> list[ActiveWorkers]:
    """Worker runs not ended, counted per state and model, with their GPUs."""
    rows = conn.execute(
        "SELECT state, model, COUNT(*), COALESCE(SUM(gpus), 0), SUM(gpus IS NULL) FROM workers "
        "WHERE state != 'ended' GROUP BY state, model"
    ).fetchall()
    return [ActiveWorkers(*row) for row in rows]


def reclaims_from(conn: sqlite3.Connection, first_id: int) -> list[ReclaimTimes]:
    """Reclaim rows with id >= first_id, in id order."""
    rows = conn.execute(
        "SELECT id, submit_time, start_time, created_at FROM reclaims WHERE id >= ? ORDER BY id", [first_id]
    ).fetchall()
    return [ReclaimTimes(*row) for row in rows]
