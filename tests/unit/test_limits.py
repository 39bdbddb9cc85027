"""Limits per key and group: windows, budget arithmetic, the ledger's limits and spend,
the gateway's gate, and `isense keys` with limits. Real SQLite in a temp dir."""

import asyncio
import json
from datetime import UTC, datetime

import pytest

from isense_slurm.cli import main
from isense_slurm.config import Price
from isense_slurm.gateway.budgets import SpendView, exhausted, next_reset, period_starts, remaining
from isense_slurm.gateway.gate import Gate, Refusal
from isense_slurm.gateway.ledger_link import LedgerLink
from isense_slurm.gateway.windows import Window, retry_after
from isense_slurm.meter import limits, usage
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.limits import Limits
from isense_slurm.meter.rows import RequestRow
from isense_slurm.meter.writer import RequestWriter

PRICE = Price(input_per_mtok=1.0, output_per_mtok=2.0, cached_input_per_mtok=0.5)  # 1000/2000 nanos per token
JAN5 = datetime(2025, 1, 5, 12, tzinfo=UTC).timestamp()


def row(key_id, i, ts, prompt=100, completion=100, model="m", status="ok") -> RequestRow:
    return RequestRow(f"r{key_id}-{i}-{ts}", ts, key_id, model, "1", "n1", prompt, completion, 0, status, 1.0, False)


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


# --- windows -------------------------------------------------------------------------------


def test_window_counts_the_last_minute_and_says_when_a_slot_frees():
    w = Window()
    for t in (0, 10, 20):
        w.add(t)
    assert w.total(30) == 3
    assert w.wait_below(3, 30) == 30  # the entry at 0 leaves at 60
    assert w.wait_below(2, 30) == 40  # two must leave: the one at 10 leaves at 70
    assert w.wait_below(4, 30) == 0
    assert w.total(60) == 2 and w.total(81) == 0
    assert w.wait_below(0, 81) == 60  # a limit of 0 is never met


def test_token_window_and_retry_after_rounding():
    w = Window()
    w.add(0, 500)
    w.add(30, 600)
    assert w.wait_below(1000, 31) == 29  # the 500 leave at 60: 600 < 1000
    assert retry_after(0.2) == 1 and retry_after(29.01) == 30 and retry_after(0) == 1


# --- budgets -------------------------------------------------------------------------------


def test_periods_and_resets_are_utc():
    day, month = period_starts(JAN5)
    assert day == datetime(2025, 1, 5, tzinfo=UTC).timestamp()
    assert month == datetime(2025, 1, 1, tzinfo=UTC).timestamp()
    assert next_reset("day", JAN5) == datetime(2025, 1, 6, tzinfo=UTC).timestamp()
    assert (
        next_reset("month", datetime(2025, 12, 9, tzinfo=UTC).timestamp())
        == datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    )
    assert next_reset("total", JAN5) is None


def test_a_budget_is_used_up_when_spend_reaches_it():
    lim = Limits(budget_day_nanos=100, budget_total_nanos=1000)
    assert exhausted(lim, (99, 99, 99)) is None
    assert exhausted(lim, (100, 100, 100)) == ("day", 100, 100)
    assert exhausted(lim, (0, 1000, 1000)) == ("total", 1000, 1000)
    assert exhausted(Limits(budget_month_nanos=0), (0, 0, 0)) == ("month", 0, 0)
    assert remaining(lim, (150, 150, 150)) == {"day": 0, "month": None, "total": 850}
    with pytest.raises(ValueError):
        Limits(rpm=-1)


def test_spend_view_counts_fresh_spend_until_a_read_holds_it():
    view = SpendView()
    starts = period_starts(JAN5)
    view.end({"key:1": (10, 10, 10)}, starts)
    view.add("key:1", 5)
    assert view.spent("key:1", JAN5) == (15, 15, 15)
    view.begin()
    view.add("key:1", 1)  # booked while the ledger is read
    assert view.spent("key:1", JAN5) == (16, 16, 16)
    view.abort()  # the read failed: nothing is lost
    assert view.spent("key:1", JAN5) == (16, 16, 16)
    view.begin()
    view.end({"key:1": (16, 16, 16)}, starts)
    assert view.spent("key:1", JAN5) == (16, 16, 16)
    assert view.spent("key:1", JAN5 + 86_400) == (0, 16, 16)  # sums of yesterday: today is 0


# --- the ledger ---------------------------------------------------------------------------


def test_limits_and_groups_are_stored_and_bump_the_generation(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        a, _ = ledger.create_key("a")
        b, _ = ledger.create_key("b")
        first = limits.generation(ledger)
        limits.set_key_group(ledger, a.id, "acme")
        limits.set_key_group(ledger, b.id, "acme")
        limits.set_limits(ledger, limits.key_subject(a.id), {"rpm": 5, "budget_day_nanos": 10})
        new = limits.set_limits(ledger, limits.group_subject("acme"), {"budget_month_nanos": 99})
        assert new == Limits(budget_month_nanos=99)
        assert limits.generation(ledger) == first + 4
        book = limits.read_book(ledger)
        assert book.subjects(a.id) == [("key:1", Limits(rpm=5, budget_day_nanos=10)), ("group:acme", new)]
        assert book.subjects(b.id) == [("group:acme", new)]
        assert book.budgeted() == ([a.id], ["acme"])
        assert limits.set_limits(ledger, limits.key_subject(a.id), {"rpm": None, "budget_day_nanos": None}).empty
        assert limits.read_book(ledger).subjects(a.id) == [("group:acme", new)]
        ledger.revoke_key(b.id)
        assert b.id not in limits.read_book(ledger).groups_of_keys
        assert limits.group_members(ledger, "acme") == [a.id, b.id]


def test_spend_and_usage_sum_the_request_rows(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        a, _ = ledger.create_key("a")
        b, _ = ledger.create_key("b")
        limits.set_key_group(ledger, a.id, "g")
        limits.set_key_group(ledger, b.id, "g")
    day_before = JAN5 - 86_400
    with RequestWriter(path, prices={"m": PRICE, "n": PRICE}, operator_share=0.7) as writer:
        for r in (
            row(a.id, 1, JAN5),
            row(a.id, 2, JAN5, model="n"),
            row(a.id, 3, day_before),
            row(b.id, 1, JAN5, prompt=0, completion=50),
            row(a.id, 4, JAN5, prompt=0, completion=0, status="aborted"),
        ):
            writer.submit(r)
    with Ledger.open(path) as ledger:
        day, month = period_starts(JAN5)
        spent = usage.spend(ledger, [a.id, b.id], ["g"], day_start=day, month_start=month)
        assert spent == {
            "key:1": (600_000, 900_000, 900_000),
            "key:2": (100_000, 100_000, 100_000),
            "group:g": (700_000, 1_000_000, 1_000_000),
        }
        rows = usage.usage_rows(ledger, [a.id], day_before, JAN5 + 1)
        assert [(r.day_start, r.model, r.requests, r.gross_nanos) for r in rows] == [
            (day - 86_400, "m", 1, 300_000),
            (day, "m", 1, 300_000),  # the aborted attempt is no request and costs nothing
            (day, "n", 1, 300_000),
        ]


# --- the gate ------------------------------------------------------------------------------


def gate_on(path, clock=None, wall=lambda: JAN5) -> tuple[Gate, LedgerLink]:
    gate = Gate({"m": PRICE}, clock=clock or Clock(), wall=wall)
    return gate, LedgerLink(path)


def test_gate_rates_concurrency_and_budget(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        a, _ = ledger.create_key("a")
        free, _ = ledger.create_key("free")
        limits.set_limits(ledger, limits.key_subject(a.id), {"rpm": 2, "concurrent": 1, "budget_day_nanos": 500_000})
        book = limits.read_book(ledger)
    clock = Clock()
    gate = Gate({"m": PRICE}, clock=clock, wall=lambda: JAN5)
    gate.install(book)
    assert gate.admit(free.id) == ()
    held = gate.admit(a.id)
    assert held == ("key:1",)
    busy = gate.admit(a.id)
    assert isinstance(busy, Refusal) and not busy.quota and "concurrent" in busy.message
    gate.release(held)
    clock.t += 10
    gate.release(gate.admit(a.id))
    over = gate.admit(a.id)
    assert isinstance(over, Refusal) and "2 requests per minute" in over.message and over.retry_after == 50
    clock.t += 51
    gate.on_row(row(a.id, 1, JAN5, prompt=100, completion=200))  # 500_000 nanos: the budget
    spent = gate.admit(a.id)
    assert isinstance(spent, Refusal) and spent.quota and "daily budget of 0.0005" in spent.message


def test_two_gates_on_one_ledger_hold_one_budget(tmp_path):
    """Two gateway processes: each sees the other's committed spend at its next refresh."""
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        a, _ = ledger.create_key("a")
        limits.set_key_group(ledger, a.id, "g")
        limits.set_limits(ledger, limits.group_subject("g"), {"budget_total_nanos": 1_000_000})

    async def scenario():
        one, link_one = gate_on(path)
        two, link_two = gate_on(path)
        await link_one.start()
        await link_two.start()
        with RequestWriter(path, prices={"m": PRICE}, operator_share=0.7) as writer:
            await one.refresh(lambda book, now: link_one.limits(book, now, writer.flush))
            await two.refresh(lambda book, now: link_two.limits(book, now))
            assert one.admit(a.id) == () and two.admit(a.id) == ()
            r = row(a.id, 1, JAN5, prompt=400, completion=300)  # 1_000_000 nanos
            writer.submit(r)
            one.on_row(r)
            assert isinstance(one.admit(a.id), Refusal)  # at once in the process that served it
            assert two.admit(a.id) == ()  # the other does not know yet...
            writer.flush()  # (the serving process commits the row before its answer goes out)
            await two.refresh(lambda book, now: link_two.limits(book, now))
            refused = two.admit(a.id)
            assert isinstance(refused, Refusal) and refused.quota  # ...until its next read
            await one.refresh(lambda book, now: link_one.limits(book, now, writer.flush))
            assert isinstance(one.admit(a.id), Refusal)  # the read holds the row: counted once
            assert one.spend.spent("group:g", JAN5)[2] == 1_000_000
        link_one.close()
        link_two.close()

    asyncio.run(scenario())


def test_gate_reads_faster_near_a_budgets_end(tmp_path):
    """At the pace between two reads, a budget that runs out within NEAR_END_SECONDS
    switches the refresh to FAST_REFRESH_SECONDS; a slow spender or a used-up budget does not."""
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as ledger:
        a, _ = ledger.create_key("a")
        limits.set_limits(ledger, limits.key_subject(a.id), {"budget_day_nanos": 10_000_000})
    wall = Clock(JAN5)

    async def scenario():
        gate, link = gate_on(path, wall=wall)
        await link.start()
        with RequestWriter(path, prices={"m": PRICE}, operator_share=0.7) as writer:

            async def read_after(seconds, cost_rows):
                for i in range(cost_rows):
                    writer.submit(row(a.id, i, wall.t, prompt=100, completion=0))  # 100_000 nanos each
                wall.t += seconds
                await gate.refresh(lambda book, now: link.limits(book, now, writer.flush))

            await read_after(0, 0)
            assert not gate.near_end
            await read_after(1.0, 1)  # 0.1 spent in 1 s: 99 s of budget left at that pace
            assert not gate.near_end
            await read_after(1.0, 20)  # 2.0 per second, 7.9 left: under 5 s at that pace
            assert gate.near_end
            await read_after(1.0, 79)  # used up: nothing left to guard
            assert not gate.near_end
        link.close()

    asyncio.run(scenario())


# --- isense keys ----------------------------------------------------------------------------


def test_keys_commands_set_show_and_report_limits(tmp_path, capsys):
    ledger = str(tmp_path / "ledger.db")
    assert (
        main(["keys", "--ledger", ledger, "create", "alice", "--group", "acme", "--rpm", "60", "--budget-day", "0.25"])
        == 0
    )
    assert main(["keys", "--ledger", ledger, "group", "acme", "--budget-month", "10", "--concurrent", "4"]) == 0
    assert main(["keys", "--ledger", ledger, "update", "alice", "--rpm", "none", "--tpm", "1000"]) == 0
    capsys.readouterr()
    assert main(["keys", "--ledger", ledger, "list", "--json"]) == 0
    (key,) = json.loads(capsys.readouterr().out)
    assert key["group"] == "acme"
    assert key["limits"] == {
        "rpm": None,
        "tpm": 1000,
        "concurrent": None,
        "budget_day": "0.25",
        "budget_month": None,
        "budget_total": None,
    }
    assert key["group_limits"]["budget_month"] == "10" and key["group_limits"]["concurrent"] == 4
    assert main(["keys", "--ledger", ledger, "usage", "alice", "--json", "--period", "today"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["budgets"]["key"]["budgets"]["day"] == {
        "budget": "0.25",
        "spent": "0",
        "remaining": "0.25",
    }
    assert report["budgets"]["group"]["name"] == "acme" and report["usage"] == []
    with pytest.raises(SystemExit):
        main(["keys", "--ledger", ledger, "update", "alice", "--rpm", "-3"])


def test_usage_route_ranges_and_daily_buckets():
    from isense_slurm.gateway.usage_route import BadQuery, buckets, time_range
    from isense_slurm.meter.usage import UsageRow

    day = int(period_starts(JAN5)[0])
    assert time_range({}, JAN5) == (int(period_starts(JAN5)[1]), day + 86_400)  # this month so far
    assert time_range({"start": "2025-01-04", "end": "2025-01-05"}, JAN5) == (day - 86_400, day + 86_400)
    assert time_range({"start_time": str(day + 5), "end_time": str(day + 6)}, JAN5) == (day, day + 86_400)
    for bad in ({"start_time": "x"}, {"start": "2025-13-01"}, {"start_time": str(day), "end_time": str(day - 1)}):
        with pytest.raises(BadQuery):
            time_range(bad, JAN5)
    rows = [UsageRow(day, "m", 2, 10, 20, 0, 8_000)]
    out = buckets(rows, day - 86_400, day + 86_400, "USD")
    assert [b["results"] for b in out][0] == []
    (result,) = out[1]["results"]
    assert result["num_model_requests"] == 2 and result["amount"] == {"value": "0.000008", "currency": "USD"}
