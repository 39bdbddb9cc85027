"""The SIGTERM drain and stop sequences (pure: fake clock and recorded calls, no vLLM)."""

import asyncio
import signal

import pytest

from isense_slurm.worker.drain import StopResult, drain, stop_vllm
from isense_slurm.worker.vllm_process import NotServing, parse_load


def test_parse_load():
    assert parse_load('{"server_load": 3}') == 3
    assert parse_load('{"server_load": 0}') == 0
    assert parse_load('{"other": 1}') is None
    assert parse_load('{"server_load": true}') is None
    assert parse_load("Internal Server Error") is None


class Run:
    """Records the calls of a drain against a fake clock that sleeps advance."""

    def __init__(self, loads, deregister_error=None, registered=True):
        self.now = 100.0
        self.loads = list(loads)
        self.calls = []
        self.deregister_error = deregister_error
        self.registered = registered
        self.exited = False

    def clock(self):
        return self.now

    async def sleep(self, s):
        self.now += s

    async def deregister(self, timeout):
        self.calls.append(("deregister", round(timeout, 3)))
        if self.deregister_error:
            raise self.deregister_error
        return self.registered

    async def in_flight(self, timeout):
        load = self.loads.pop(0) if len(self.loads) > 1 else self.loads[0]
        self.calls.append(("load", load))
        if isinstance(load, Exception):
            raise load
        return load

    async def stop(self, busy):
        self.calls.append(("stop", busy, round(self.now, 3)))
        self.exited = True
        return StopResult(0.4, busy, False)

    def go(self, drain_seconds=2.0, started_at=None):
        return asyncio.run(
            drain(
                started_at=self.now if started_at is None else started_at,
                drain_seconds=drain_seconds,
                deregister=self.deregister,
                in_flight=self.in_flight,
                vllm_exited=lambda: self.exited,
                stop=self.stop,
                clock=self.clock,
                sleep=self.sleep,
            )
        )


def test_deregisters_first_then_waits_for_idle_then_stops():
    run = Run([2, 1, 0, 0])
    result = run.go()
    assert run.calls[0][0] == "deregister"
    assert [c[0] for c in run.calls[1:]] == ["load"] * 4 + ["stop"]
    assert result.deregistered and result.left_in_flight == 0
    assert run.calls[-1] == ("stop", False, 100.3)  # 3 polls of 0.1 s, not the 2 s budget


def test_idle_must_be_seen_twice_in_a_row():
    run = Run([0, 1, 0, 0])
    run.go()
    assert [c[1] for c in run.calls if c[0] == "load"] == [0, 1, 0, 0]


def test_budget_counts_from_the_signal_then_busy_stop():
    run = Run([5])
    result = run.go(drain_seconds=2.0, started_at=99.5)  # the signal came 0.5 s ago
    assert result.left_in_flight == 5
    assert run.calls[-1] == ("stop", True, pytest.approx(101.5, abs=1e-6))


def test_deregister_never_takes_the_whole_budget():
    run = Run([0])
    run.go(drain_seconds=3.0)
    assert run.calls[0] == ("deregister", 1.0)
    run = Run([0])
    run.go(drain_seconds=0.5)
    assert run.calls[0] == ("deregister", 0.5)


def test_failed_deregister_still_drains_and_stops():
    run = Run([0], deregister_error=ConnectionRefusedError())
    result = run.go()
    assert not result.deregistered
    assert run.calls[-1][:2] == ("stop", False)


def test_unknown_load_waits_out_the_budget_then_treats_vllm_as_busy():
    run = Run([None])
    result = run.go(drain_seconds=1.0)
    assert result.left_in_flight is None
    assert run.calls[-1] == ("stop", True, pytest.approx(101.0, abs=1e-6))


def test_vllm_not_listening_any_more_stops_at_once():
    # Slurm SIGTERMed vLLM too: it closed its socket; waiting would only burn KillWait.
    run = Run([NotServing("refused")])
    result = run.go()
    assert [c[0] for c in run.calls] == ["deregister", "load", "stop"]
    assert run.calls[-1] == ("stop", False, 100.0)
    assert result.left_in_flight is None


def test_vllm_already_exited_skips_the_wait():
    run = Run([3])
    run.exited = True
    result = run.go()
    assert [c[0] for c in run.calls] == ["deregister", "stop"]
    assert result.wait_seconds == 0


class Group:
    """A fake vLLM process group for stop_vllm."""

    def __init__(self, loads=(0,), dies_on=signal.SIGTERM, alive=True):
        self.now = 0.0
        self.loads = list(loads)
        self.signals = []
        self.alive = alive
        self.dies_on = dies_on

    def clock(self):
        return self.now

    async def sleep(self, s):
        self.now += s

    async def in_flight(self, timeout):
        load = self.loads.pop(0) if len(self.loads) > 1 else self.loads[0]
        if isinstance(load, Exception):
            raise load
        return load

    def signal_engines(self, sig):
        self.signals.append(("engines", sig, round(self.now, 3)))

    def signal_group(self, sig):
        self.signals.append(("group", sig, round(self.now, 3)))
        if sig == self.dies_on or sig == signal.SIGKILL:
            self.alive = False

    def stop(self, busy, grace=2.0):
        return asyncio.run(
            stop_vllm(
                busy=busy,
                in_flight=self.in_flight,
                signal_engines=self.signal_engines,
                signal_group=self.signal_group,
                group_alive=lambda: self.alive,
                grace=grace,
                clock=self.clock,
                sleep=self.sleep,
            )
        )


def test_idle_stop_is_one_sigterm_to_the_group():
    g = Group()
    result = g.stop(busy=False)
    assert g.signals == [("group", signal.SIGTERM, 0.0)]
    assert not result.engine_first and not result.killed


def test_busy_stop_signals_the_engine_first_and_waits_for_the_answers():
    g = Group(loads=[16, 16, 3, 0])
    result = g.stop(busy=True)
    assert g.signals[0] == ("engines", signal.SIGTERM, 0.0)
    assert g.signals[1] == ("group", signal.SIGTERM, 0.06)  # after 3 waits of 20 ms
    assert result.engine_first and not result.killed


def test_busy_stop_waits_at_most_a_second_for_the_aborts():
    g = Group(loads=[4])
    g.stop(busy=True)
    assert g.signals[1][:2] == ("group", signal.SIGTERM)
    assert g.signals[1][2] == pytest.approx(1.0, abs=0.021)


def test_busy_stop_goes_on_when_vllm_stops_listening():
    g = Group(loads=[NotServing("refused")])
    g.stop(busy=True)
    assert [s[:2] for s in g.signals] == [("engines", signal.SIGTERM), ("group", signal.SIGTERM)]
    assert g.signals[1][2] == 0.0


def test_group_that_ignores_sigterm_is_killed_at_the_grace_end():
    g = Group(dies_on=None)
    result = g.stop(busy=False, grace=2.0)
    assert g.signals[-1][:2] == ("group", signal.SIGKILL)
    assert g.signals[-1][2] == pytest.approx(2.0, abs=0.051)
    assert result.killed
