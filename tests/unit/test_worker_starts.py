"""Worker start phases: the register payload's "start", the ledger's record of it,
the worker's reading of vLLM's log, and what `isense status` makes of them."""

import sqlite3
import time

import pytest

from isense_slurm.contracts.control import Registration, check_start
from isense_slurm.meter.ledger import Ledger
from isense_slurm.meter.start_queries import median_steps, starts_since
from isense_slurm.worker.start_phases import process_started_at, vllm_durations

T0 = 1_750_000_000.0


def test_the_start_field_keeps_known_phases_as_floats_and_drops_unknown_ones():
    assert check_start({"healthy": T0, "weights_s": 1, "future_phase": 3}) == {"healthy": T0, "weights_s": 1.0}
    assert check_start({}) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([1, 2], "'start' must be an object"),
        ({"healthy": "soon"}, "'start.healthy' must be a non-negative number"),
        ({"engine_s": -1}, "'start.engine_s' must be a non-negative number"),
        ({"probed": True}, "'start.probed' must be a non-negative number"),
        ({"worker_up": float("nan")}, "'start.worker_up' must be a non-negative number"),
    ],
)
def test_a_bad_start_field_is_named(value, message):
    assert check_start(value) == message


def test_a_registration_sends_start_only_when_it_has_one():
    bare = Registration("7", "n1", "0", "tiny", "http://127.0.0.1:9")
    assert "start" not in bare.payload()
    timed = Registration("7", "n1", "0", "tiny", "http://127.0.0.1:9", start={"healthy": T0})
    assert timed.payload()["start"] == {"healthy": T0}


def test_the_ledger_keeps_the_first_start_report_of_each_run(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        assert ledger.record_start("9", {"healthy": T0}) is False  # no run of job 9 yet
        ledger.worker_event("9", state="lent", node="n1", gpus=4, model="tiny", at=T0)
        assert ledger.record_start("9", {"worker_up": T0 + 1, "healthy": T0 + 30, "weights_s": 2.5}) is True
        assert ledger.record_start("9", {"healthy": T0 + 99}) is False  # a re-registration: kept
        ledger.worker_event("9", state="serving", at=T0 + 31)
        ledger.worker_event("9", state="ended", reason="preempted", at=T0 + 60)
        ledger.worker_event("9", state="lent", at=T0 + 100)  # requeued: run 1
        assert ledger.record_start("9", {"healthy": T0 + 120}) is True
    conn = sqlite3.connect(tmp_path / "ledger.db")
    rows = conn.execute("SELECT job_id, run, worker_up, healthy, weights_s FROM worker_starts ORDER BY run").fetchall()
    assert rows == [("9", 0, T0 + 1, T0 + 30, 2.5), ("9", 1, None, T0 + 120, None)]
    # Only runs that served count; steps are seconds after the job's start.
    (start,) = starts_since(conn, T0)
    assert start.steps == {"worker": 1.0, "vllm": None, "healthy": 30.0, "probed": None, "serving": 31.0}
    assert (start.weights_s, start.engine_s, start.steps["serving"]) == (2.5, None, 31.0)
    assert starts_since(conn, T0 + 1) == []
    medians = median_steps([start])
    assert (medians["healthy"], medians["serving"], medians["vllm"], medians["weights_s"]) == (30.0, 31.0, None, 2.5)


def test_a_ledger_without_the_table_yet_has_no_starts(tmp_path):
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute("CREATE TABLE workers (job_id TEXT)")
    assert starts_since(conn, 0) == []


VLLM_LOG = b"""(APIServer pid=1728) INFO 12-07 01:39:04 [api_utils.py:286] non-default args: {}
(Worker pid=2079) INFO 12-07 01:39:26 [base_loader.py:82] Initializing model took 0.164916 seconds
(Worker pid=2079) INFO 12-07 01:39:26 [default_loader.py:501] Loading weights took 12.31 seconds
(EngineCore pid=1919) INFO 12-07 01:39:28 [core.py:402] init engine (profile, create kv cache, warmup model) took 0.05 s
(APIServer pid=1728) INFO 12-07 01:39:29 [entry.py:140] Starting vLLM server on http://127.0.0.1:35737
"""


def test_vllm_durations_come_from_this_runs_part_of_the_log(tmp_path):
    log = tmp_path / "vllm.log"
    earlier = b"INFO Loading weights took 99.0 seconds\n"
    log.write_bytes(earlier + VLLM_LOG)
    assert vllm_durations(log, len(earlier)) == {"weights_s": 12.31, "engine_s": 0.05}
    log.write_bytes(b"a vLLM that prints neither\n")
    assert vllm_durations(log) == {}
    assert vllm_durations(tmp_path / "missing.log") == {}


def test_the_process_start_is_in_the_past():
    started = process_started_at()
    assert started is not None and time.time() - 3600 < started <= time.time()


def test_the_planner_gets_each_models_median_start_over_its_latest_serving_runs(tmp_path):
    with Ledger.open(tmp_path / "ledger.db") as ledger:
        # tiny: starts of 30, 40, 100 s (oldest first); big: one of 300 s; a run that never
        # served and a run of an older week do not count.
        for i, (job, model, start, took) in enumerate(
            [("1", "tiny", T0, 30), ("2", "tiny", T0 + 100, 40), ("3", "tiny", T0 + 200, 100), ("4", "big", T0, 300)]
        ):
            ledger.worker_event(job, state="lent", node=f"n{i}", gpus=4, model=model, at=start)
            ledger.worker_event(job, state="serving", at=start + took)
        ledger.worker_event("5", state="lent", node="n9", gpus=4, model="tiny", at=T0 + 300)
        ledger.worker_event("0", state="lent", node="n8", gpus=4, model="tiny", at=T0 - 10 * 86400)
        ledger.worker_event("0", state="serving", at=T0 - 10 * 86400 + 999)
        assert ledger.start_times(T0 - 86400) == {"tiny": (40.0, 3), "big": (300.0, 1)}
        # Only the latest `last` runs of a model: the two newest tiny ones.
        assert ledger.start_times(T0 - 86400, last=2) == {"tiny": (70.0, 2), "big": (300.0, 1)}
