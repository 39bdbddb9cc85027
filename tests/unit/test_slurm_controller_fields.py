"""Fields the controller reads from Slurm: a pending job's -w nodes, a node's last busy
time, reservations and `scontrol show config` (recorded 22.05 and 26.05 output)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from isense_slurm.slurm.parse_json import jobs_from_json, nodes_from_json
from isense_slurm.slurm.parse_scontrol import (
    config_from_scontrol,
    jobs_from_scontrol,
    nodes_from_scontrol,
    reservations_from_scontrol,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
VERSIONS = ["22.05", "24.11", "26.05"]


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # scontrol prints local time; recorded with TZ=UTC
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def read(version: str, name: str) -> str:
    return (FIXTURES / version / name).read_text()


@pytest.mark.parametrize("version", VERSIONS)
def test_required_nodes_of_pending_jobs(version):
    for jobs in (
        jobs_from_json(json.loads(read(version, "squeue.json"))),
        jobs_from_scontrol(read(version, "scontrol-job.txt")),
    ):
        by_id = {j.job_id: j for j in jobs}
        pinned = [j for j in jobs if j.is_pending and j.required_nodes == ("n1",)]
        assert pinned, "the recorded pending job asked for -w n1"
        assert all(j.required_nodes == () for j in jobs if j.is_pending and j.reason == "JobHeldUser")
        assert any(j.required_nodes == ("n1", "n2") for j in by_id.values())


@pytest.mark.parametrize("version", VERSIONS)
def test_last_busy_agrees_between_json_and_scontrol(version):
    # The per-node JSON the backend reads: sinfo --json in 22.05, scontrol show node --json later.
    source = "sinfo.json" if version == "22.05" else "scontrol-node.json"
    from_json = {n.name: n.last_busy for n in nodes_from_json(json.loads(read(version, source)))}
    from_text = {n.name: n.last_busy for n in nodes_from_scontrol(read(version, "scontrol-node.txt"))}
    assert set(from_json) == {"n1", "n2", "n3", "n4"}
    assert all(isinstance(t, datetime) and t.tzinfo is not None for t in from_json.values())
    assert from_json == from_text


def test_reservations():
    text = (
        "ReservationName=maint StartTime=2026-11-28T02:13:49 EndTime=2026-11-28T02:23:49 Duration=00:10:00"
        " Nodes=n[3-4] NodeCnt=2 CoreCnt=16 Features=(null) PartitionName=(null) Flags=MAINT,SPEC_NODES"
        " TRES=cpu=16 Users=root Groups=(null) Accounts=(null) Licenses=(null) State=INACTIVE"
        " BurstBuffer=(null) Watts=n/a MaxStartDelay=(null)\n"
    )
    (r,) = reservations_from_scontrol(text)
    assert (r.name, r.nodes, r.state, r.flags) == ("maint", ("n3", "n4"), "INACTIVE", {"MAINT", "SPEC_NODES"})
    assert r.start == datetime(2026, 11, 28, 2, 13, 49, tzinfo=UTC)
    assert r.end == datetime(2026, 11, 28, 2, 23, 49, tzinfo=UTC)
    assert reservations_from_scontrol("No reservations in the system\n") == []


def test_show_config():
    text = (
        "Configuration data as of 2026-11-28T00:13:23\n"
        "AccountingStorageHost   = localhost\n"
        "KillWait                = 5 sec\n"
        "Prolog                  = /etc/slurm/prolog.d/*\n"
        "PrologSlurmctld         = (null)\n"
        "SchedulerParameters     = batch_sched_delay=0,bf_interval=5\n"
        "\nCgroup Support Configuration:\n"
        "KillWait                = 99 sec\n"
    )
    conf = config_from_scontrol(text)
    assert conf["KillWait"] == "5 sec"  # the first of a repeated name wins
    assert conf["Prolog"] == "/etc/slurm/prolog.d/*" and conf["PrologSlurmctld"] == "(null)"
    assert conf["SchedulerParameters"] == "batch_sched_delay=0,bf_interval=5"
    assert "Configuration data as of 2026-11-28T00" not in conf


def test_config_joins_indexed_keys_as_newer_slurm_prints_them():
    # Slurm 24.11 prints each Prolog/Epilog script on its own line with an index.
    text = (
        "Epilog[0]               = /opt/isense/etc-slurm/epilog.d/isense-epilog\n"
        "EpilogMsgTime           = 2000 usec\n"
        "Prolog[0]               = /etc/slurm/prolog.d/a\n"
        "Prolog[1]               = /etc/slurm/prolog.d/b\n"
        "PrologFlags             = Alloc\n"
    )
    conf = config_from_scontrol(text)
    assert conf["Prolog"] == "/etc/slurm/prolog.d/a,/etc/slurm/prolog.d/b"
    assert conf["Epilog"] == "/opt/isense/etc-slurm/epilog.d/isense-epilog"
    assert conf["PrologFlags"] == "Alloc" and "Prolog[0]" not in conf
