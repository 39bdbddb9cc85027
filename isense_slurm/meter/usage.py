"""What keys and groups spent, read from the request rows: the gateways' budget checks,
`GET /v1/usage` and `isense keys usage` all read these sums.

Spend is the sum of `gross_nanos` (what the client is billed) over the key's rows with
ts in the period; a group's spend is that of every key in the group now (revoked keys
too). Days and months are UTC, like the rest of the reports (periods.py).
"""

from dataclasses import dataclass

from isense_slurm.meter.ledger import Ledger

DAY_SECONDS = 86_400

# subject -> (spent today, spent this month, spent in total), nanos
Spend = dict[str, tuple[int, int, int]]


@dataclass(frozen=True)
class UsageRow:
    """One UTC day and model of a key's (or keys') requests."""

    day_start: int  # unix seconds of the day's UTC midnight
    model: str
    requests: int  # aborted attempts (a retried worker failure) not counted
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    gross_nanos: int


def _sums(day_start: float, month_start: float) -> tuple[str, list[float]]:
    # Within one query both sums see the same rows, so day <= month <= total always.
    return (
        "COALESCE(SUM(CASE WHEN r.ts >= ? THEN r.gross_nanos END), 0), "
        "COALESCE(SUM(CASE WHEN r.ts >= ? THEN r.gross_nanos END), 0), COALESCE(SUM(r.gross_nanos), 0)",
        [day_start, month_start],
    )


def spend(
    ledger: Ledger,
    key_ids: list[int],
    groups: list[str],
    *,
    day_start: float,
    month_start: float,
    with_total: bool = True,
) -> Spend:
    """Spend per 'key:<id>' and 'group:<name>' asked for (absent: nothing spent).

    with_total=False reads only rows since `month_start` (the total is then that too):
    for callers whose subjects have no total budget, a shorter read on a large ledger.
    """
    sums, params = _sums(day_start, month_start)
    since = 0.0 if with_total else month_start
    out: Spend = {}
    with ledger.lock:
        if key_ids:
            marks = ", ".join("?" * len(key_ids))
            rows = ledger.db.execute(
                f"SELECT r.key_id, {sums} FROM requests r WHERE r.key_id IN ({marks}) AND r.ts >= ? GROUP BY r.key_id",
                [*params, *key_ids, since],
            ).fetchall()
            out.update({f"key:{row[0]}": (row[1], row[2], row[3]) for row in rows})
        if groups:
            marks = ", ".join("?" * len(groups))
            rows = ledger.db.execute(
                f"SELECT k.key_group, {sums} FROM api_keys k JOIN requests r ON r.key_id = k.id "
                f"WHERE k.key_group IN ({marks}) AND r.ts >= ? GROUP BY k.key_group",
                [*params, *groups, since],
            ).fetchall()
            out.update({f"group:{row[0]}": (row[1], row[2], row[3]) for row in rows})
    return out


def usage_rows(ledger: Ledger, key_ids: list[int], since: float, until: float) -> list[UsageRow]:
    """Requests, tokens and cost per UTC day and model of some keys, since <= ts < until."""
    if not key_ids:
        return []
    marks = ", ".join("?" * len(key_ids))
    with ledger.lock:
        rows = ledger.db.execute(
            f"SELECT CAST(ts / {DAY_SECONDS} AS INTEGER) AS day, model, SUM(status != 'aborted'), "
            "SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(gross_nanos) "
            f"FROM requests WHERE key_id IN ({marks}) AND ts >= ? AND ts < ? "
            "GROUP BY day, model ORDER BY day, model",
            [*key_ids, since, until],
        ).fetchall()
    return [UsageRow(row[0] * DAY_SECONDS, *row[1:]) for row in rows]
