"""GET /v1/usage: a key's own usage per UTC day and model, and its budgets.

The shape follows OpenAI's Usage API for completions (GET
/v1/organization/usage/completions with bucket_width=1d, group_by=model): a page of
daily buckets, each with one result per model (num_model_requests, input_tokens,
output_tokens, input_cached_tokens), plus the cost in the form of OpenAI's Costs API
(`amount: {value, currency}`; the value a decimal string, as prices are in /v1/models)
and, an isense addition, `budget`: the key's and its group's limits, spend and what is
left. Read from the ledger off the event loop: it holds every gateway's rows.
"""

import time
from datetime import UTC, datetime, timedelta

from aiohttp import web

from isense_slurm.gateway.budgets import remaining
from isense_slurm.http import errors
from isense_slurm.meter.limits import BUDGET_PERIODS, RATE_FIELDS, Limits
from isense_slurm.meter.money import from_nanos
from isense_slurm.meter.usage import DAY_SECONDS, UsageRow
from isense_slurm.periods import parse_date, utc_midnight

MAX_DAYS = 366


class BadQuery(ValueError):
    pass


def time_range(query, now: float) -> tuple[int, int]:
    """[start, end) in unix seconds at UTC midnights: start_time/end_time (unix seconds,
    OpenAI's names) or start/end (YYYY-MM-DD, end included); default this UTC month."""
    today = datetime.fromtimestamp(now, UTC).date()
    try:
        if "start_time" in query:
            start = int(query["start_time"])
        elif "start" in query:
            start = int(utc_midnight(parse_date(query["start"], "start")).timestamp())
        else:
            start = int(utc_midnight(today.replace(day=1)).timestamp())
        if "end_time" in query:
            end = int(query["end_time"])
        elif "end" in query:
            end = int(utc_midnight(parse_date(query["end"], "end") + timedelta(days=1)).timestamp())
        else:
            end = int(utc_midnight(today + timedelta(days=1)).timestamp())
    except ValueError as err:
        raise BadQuery(f"start_time and end_time are unix seconds: {err}") from None
    except Exception as err:  # noqa: BLE001 - parse_date's UsageError: the text says what is wrong
        raise BadQuery(str(err)) from None
    start -= start % DAY_SECONDS
    end += -end % DAY_SECONDS
    if end <= start:
        raise BadQuery("the end must come after the start")
    if (end - start) // DAY_SECONDS > MAX_DAYS:
        raise BadQuery(f"at most {MAX_DAYS} days at once")
    return start, end


def money(nanos: int, currency: str) -> dict:
    return {"value": format(from_nanos(nanos).normalize(), "f"), "currency": currency}


def buckets(rows: list[UsageRow], start: int, end: int, currency: str) -> list[dict]:
    """One bucket per UTC day of [start, end), days without use included (as OpenAI does)."""
    by_day: dict[int, list[dict]] = {}
    for row in rows:
        by_day.setdefault(row.day_start, []).append(
            {
                "object": "organization.usage.completions.result",
                "model": row.model,
                "num_model_requests": row.requests,
                "input_tokens": row.prompt_tokens,
                "output_tokens": row.completion_tokens,
                "input_cached_tokens": row.cached_tokens,
                "amount": money(row.gross_nanos, currency),
            }
        )
    return [
        {"object": "bucket", "start_time": day, "end_time": day + DAY_SECONDS, "results": by_day.get(day, [])}
        for day in range(start, end, DAY_SECONDS)
    ]


def budget_view(limits: Limits, spent: tuple[int, int, int], currency: str) -> dict:
    left = remaining(limits, spent)
    budgets = limits.budgets()
    return {
        "limits": {name: getattr(limits, name) for name in RATE_FIELDS},
        "budgets": {
            period: {
                "budget": money(budgets[period], currency) if period in budgets else None,
                "spent": money(amount, currency),
                "remaining": money(left[period] or 0, currency) if period in budgets else None,
            }
            for period, amount in zip(BUDGET_PERIODS, spent)
        },
    }


async def usage(gateway, request: web.Request) -> web.Response:
    if request.method != "GET":
        return errors.error_response(405, "/v1/usage takes GET", headers={"Allow": "GET"})
    key = gateway.keys.lookup(request.headers.get("Authorization"))
    if key is None:
        return errors.error_response(401, "invalid, revoked or missing API key")
    if gateway.ledger is None:
        return errors.error_response(500, "no ledger here", code="internal_error")
    now = time.time()
    try:
        start, end = time_range(request.query, now)
    except BadQuery as err:
        return errors.error_response(400, str(err))
    rows, budgets = await gateway.ledger.usage(key.id, start, end, now)
    currency = gateway.currency
    views: dict[str, dict | None] = {"key": None, "group": None}
    for _subject, group, limits, spent in budgets:
        view = budget_view(limits, spent, currency)
        if group is None:
            views["key"] = view
        else:
            views["group"] = {"name": group, **view}
    body = {
        "object": "page",
        "data": buckets(rows, start, end, currency),
        "has_more": False,
        "next_page": None,
        "budget": {"currency": currency, "as_of": int(now), **views},
    }
    return web.json_response(body)
