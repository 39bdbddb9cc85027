"""Read-only queries behind `isense status` and `isense top`.

All take a connection from earnings.open_readonly (mode=ro) and run on indexes:
requests by node and time (requests_node_ts, schema v3) or by time (requests_ts),
workers by `state` (workers_state), reclaims by id.
"""

import sqlite3

from isense_slurm.meter.earnings import _SUMS, request_sums
from isense_slurm.meter.rows import RECLAIM_COLUMNS, WORKER_COLUMNS, ReclaimInfo, RequestTotals, WorkerInfo

# Each distinct node by one index seek (SQLite has no loose index scan of its own).
_DISTINCT_NODES = (
    "WITH RECURSIVE n(node) AS (SELECT MIN(node) FROM requests UNION ALL "
    "SELECT (SELECT MIN(node) FROM requests WHERE node > n.node) FROM n WHERE n.node IS NOT NULL) "
    "SELECT node FROM n WHERE node IS NOT NULL"
)


def sums_by_node(conn: sqlite3.Connection, start: float, end: float) -> dict[str | None, RequestTotals]:
    """{node (None: not recorded): RequestTotals} of requests with start <= ts < end.

    With the requests_node_ts index every node's range is summed from the index alone:
    about 35 ms for 200,000 requests over 500 nodes, against 400+ ms for GROUP BY over
    requests_ts. A ledger not yet migrated to v3 (only the daemon migrates) takes the
    slow way.
    """
    if not _has_index(conn, "requests_node_ts"):
        return request_sums(conn, start, end, "node")
    out: dict[str | None, RequestTotals] = {}
    nodes = [row[0] for row in conn.execute(_DISTINCT_NODES)]
    for node in [*nodes, None]:
        where = "node IS NULL" if node is None else "node = ?"
        params = [start, end] if node is None else [node, start, end]
        row = conn.execute(f"SELECT {_SUMS} FROM requests WHERE {where} AND ts >= ? AND ts < ?", params).fetchone()
        if row[0]:
            out[node] = RequestTotals(*row)
    return out


def _has_index(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", [name]).fetchone() is not None


def active_workers(conn: sqlite3.Connection) -> dict[str, WorkerInfo]:
    """job id -> its latest run that has not ended (lent, serving or draining)."""
    rows = conn.execute(f"SELECT {WORKER_COLUMNS} FROM workers WHERE state != 'ended' ORDER BY job_id, run").fetchall()
    return {row[0]: WorkerInfo(*row) for row in rows}  # later runs overwrite earlier ones


def recent_reclaims(conn: sqlite3.Connection, limit: int) -> list[ReclaimInfo]:
    """The last `limit` reclaim rows, newest first."""
    rows = conn.execute(f"SELECT {RECLAIM_COLUMNS} FROM reclaims ORDER BY id DESC LIMIT ?", [limit]).fetchall()
    return [ReclaimInfo(*row) for row in rows]


def token_series(conn: sqlite3.Connection, start: float, step: float, buckets: int) -> list[int]:
    """Tokens (prompt + completion) served in each of `buckets` slots of `step` seconds from `start`."""
    end = start + step * buckets
    rows = conn.execute(
        "SELECT CAST((ts - ?) / ? AS INTEGER) AS slot, SUM(prompt_tokens + completion_tokens) "
        "FROM requests WHERE ts >= ? AND ts < ? GROUP BY slot",
        [start, step, start, end],
    ).fetchall()
    series = [0] * buckets
    for slot, tokens in rows:
        if 0 <= slot < buckets:
            series[slot] += tokens or 0
    return series
