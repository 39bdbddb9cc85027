"""Validation of the node hooks' events (the daemon's side of POST /internal/events)."""

import pytest

from isense_slurm.contracts.events import EventError, events_of, validate_event


def job_start(**over):
    event = {
        "kind": "job_start",
        "job_id": "42",
        "node": "n1",
        "user": "trainer",
        "partition": "train",
        "gpus": [1, 0],
        "time": 1700000000.5,
        "cleaned": [{"pid": 123, "cmd": "sleep 300", "gpus": [0], "source": "scan", "sigkill": False}],
        "clean_seconds": 0.01,
        "survivors": [],
    }
    event.update(over)
    return event


def worker_end(**over):
    event = {
        "kind": "worker_end",
        "job_id": "41",
        "node": "n1",
        "gpus": [0, 1, 2, 3],
        "time": 1700000000.0,
        "sigterm_time": 1699999999.2,
        "exit_code": "0",
        "exit_code2": "0:0",
        "derived_ec": "0",
        "restart_count": 1,
        "reason": "preempted",
    }
    event.update(over)
    return event


def test_valid_events_come_back_normalised_with_known_fields_only():
    out = validate_event(job_start(extra="ignored"))
    assert out["gpus"] == [0, 1] and "extra" not in out
    assert out["cleaned"][0]["pid"] == 123 and out["job_id"] == "42"
    end = validate_event(worker_end())
    assert end["sigterm_time"] == 1699999999.2 and end["reason"] == "preempted"
    free = validate_event({"kind": "gpus_free", "node": "n1", "gpus": [2], "time": 1700000001, "job_id": ""})
    assert free == {"kind": "gpus_free", "node": "n1", "gpus": [2], "time": 1700000001.0, "job_id": None}


@pytest.mark.parametrize(
    "event, field",
    [
        (job_start(kind="job_begin"), "event.kind"),
        (job_start(node=""), "event.node"),
        (job_start(node="n1; rm -rf"), "event.node"),
        (job_start(gpus=[0, -1]), "event.gpus"),
        (job_start(gpus="0,1"), "event.gpus"),
        (job_start(gpus=[True]), "event.gpus"),
        (job_start(time="now"), "event.time"),
        (job_start(time=float("nan")), "event.time"),
        (job_start(time=0), "event.time"),
        (job_start(job_id=42), "event.job_id"),
        (job_start(job_id="42; x"), "event.job_id"),
        (job_start(cleaned=[{"pid": "123"}]), "event.cleaned[0].pid"),
        (job_start(cleaned="none"), "event.cleaned"),
        (job_start(clean_seconds=-1), "event.clean_seconds"),
        (worker_end(job_id=None), "event.job_id"),
        (worker_end(reason="bored"), "event.reason"),
        (worker_end(sigterm_time="yesterday"), "event.sigterm_time"),
        (worker_end(restart_count=-1), "event.restart_count"),
        (worker_end(exit_code=0), "event.exit_code"),
        ("not an object", "event"),
    ],
)
def test_bad_fields_are_named(event, field):
    with pytest.raises(EventError) as err:
        validate_event(event)
    assert str(err.value).startswith(field + ":")


def test_body_is_one_event_or_a_list():
    assert events_of({"kind": "gpus_free"}) == [{"kind": "gpus_free"}]
    assert events_of({"events": [1, 2]}) == [1, 2]
    for bad in ({"events": []}, {"events": {}}, [job_start()], "x"):
        with pytest.raises(EventError):
            events_of(bad)
