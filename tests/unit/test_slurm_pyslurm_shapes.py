"""PyslurmBackend's conversions without pyslurm: stand-in objects shaped like pyslurm
22.5.x and 24.11.x give the same models the CLI parsers give (GPUs by shape, states,
reasons, times), and submit options map to JobSubmitDescription fields or fall back
to sbatch. The real thing runs in tests/integration/test_backend_contract.py."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from isense_slurm.errors import SlurmError
from isense_slurm.slurm import SubmitOptions
from isense_slurm.slurm.pyslurm_backend import PyslurmBackend
from isense_slurm.slurm.pyslurm_convert import gpus_of, node_from, partition_from, reason_of
from isense_slurm.slurm.pyslurm_load import load_pyslurm, pyslurm_series
from isense_slurm.slurm.pyslurm_submit import submit_fields

T0 = 1_780_000_000


@pytest.mark.parametrize(
    "value, gpus",
    [
        ({"gpu": 4}, 4),  # 22.5.x configured_gres
        ({"gpu:a100": 2, "shard": 8}, 2),
        ({"gres/gpu": 2}, 2),  # 24.11.x allocated_gres via TRES
        ({"gres/gpu": 3, "gres/gpu:a100": 3}, 3),  # TRES untyped total wins
        ({"gpu": {"count": 2, "indexes": "0-1"}}, 2),  # 22.5.x gres_used with IDX
        ({"gpu": {"count": 0, "indexes": "N/A"}}, 0),
        ({}, 0),
        (None, 0),
        ("gpu:4", 4),
    ],
)
def test_gpus_by_shape(value, gpus):
    assert gpus_of(value) == gpus


def test_reason_is_the_first_word_as_squeue_gives_it():
    assert reason_of("ReqNodeNotAvail, UnavailableNodes:n1") == "ReqNodeNotAvail"
    assert reason_of("Priority") == "Priority"
    assert reason_of("None") is None and reason_of(None) is None
    assert reason_of("job requeued in held state") == "job_requeued_in_held_state"  # as scontrol


def test_series_of_a_release():
    assert pyslurm_series("22.05.8") == pyslurm_series("22.5.3") == "22.5"
    assert pyslurm_series("24.11.5") == pyslurm_series("24.11.0") == "24.11"


def test_no_pyslurm_for_26_05_is_said_before_any_import():
    with pytest.raises(SlurmError, match=r"no pyslurm exists for Slurm 26\.05\.5"):
        load_pyslurm("26.05.5")


def test_missing_slurm_conf_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "nope.conf"))
    with pytest.raises(SlurmError, match=r"SLURM_CONF=.*nope.conf: no such file"):
        load_pyslurm("22.05.8")


def node(**kw):
    base = dict(
        name="n1",
        state="MIXED+DRAIN",
        configured_gres={"gpu": 4},
        allocated_gres={"gpu": {"count": 2, "indexes": "0-1"}},
        partitions=["train", "inference"],
        active_features=[],
        available_features=["a100"],
        reason="fan",
        reason_user="root",
        reason_time=T0,
        total_cpus=8,
        allocated_cpus=2,
        address="10.0.0.1",
        last_busy_time=T0,
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_node_fields():
    n = node_from(node())
    assert (n.name, n.state, n.flags) == ("n1", "MIXED", frozenset({"DRAIN"}))
    assert (n.gpus_total, n.gpus_alloc, n.gpus_idle) == (4, 2, 2)
    assert n.partitions == ("train", "inference") and n.features == ("a100",)
    assert n.reason_time == datetime.fromtimestamp(T0, UTC) and not n.usable
    n24 = node_from(node(state="IDLE", allocated_gres={}, configured_gres={"gpu": 4}))
    assert (n24.state, n24.flags, n24.gpus_alloc) == ("IDLE", frozenset(), 0)


def test_partition_fields():
    p = partition_from(
        SimpleNamespace(
            name="inference",
            nodes="n[1-2]",
            priority_tier=1,
            preempt_mode="REQUEUE",
            state="UP",
            is_default=False,
            max_time="UNLIMITED",
            default_time=None,
            preemption_grace_time=None,
            total_cpus=16,
            total_nodes=2,
        )
    )
    assert p.nodes == ("n1", "n2") and p.max_time is None and p.grace_time == 0
    assert p.preempt_mode == "REQUEUE" and p.priority_tier == 1


class FakeJob(SimpleNamespace):
    def get_resource_layout_per_node(self):
        return self.layout


def job(**kw):
    base = dict(
        id=42,
        name="train-x",
        user_id=0,
        state="RUNNING",
        state_reason="None",
        partition="train",
        allocated_nodes="n[1-2]",
        required_nodes=None,
        num_nodes=2,
        cpus=4,
        gres_per_node={"gpu": 2},
        submit_time=T0,
        start_time=T0 + 5,
        end_time=T0 + 65,
        time_limit=1,
        preempt_time=None,
        requeue_count=0,
        comment=None,
        exit_code=0,
        exit_code_signal=0,
        batch_host="n1",
        standard_output="/jobs/42.out",
        working_directory="/jobs",
        ntasks=1,
        layout={
            "n1": {"gres": {"gpu": {"count": 2, "indexes": "0-1"}}},
            "n2": {"gres": {"gpu": {"count": 2, "indexes": "2-3"}}},
        },
    )
    base.update(kw)
    return FakeJob(**base)


def test_running_job_fields():
    j = PyslurmBackend()._job(job())
    assert (j.job_id, j.user, j.state, j.reason, j.partition) == (42, "root", "RUNNING", None, "train")
    assert (j.gpus, j.gpus_per_node, j.nodes, j.node_count) == (4, 2, ("n1", "n2"), 2)
    assert j.gpu_indices == (("n1", (0, 1)), ("n2", (2, 3)))
    assert j.start_time == datetime.fromtimestamp(T0 + 5, UTC) and j.expected_start is None
    assert j.time_limit == 1 and j.exit_code is None and j.is_active


def test_pending_job_counts_gpus_per_node_and_keeps_the_forecast():
    j = PyslurmBackend()._job(
        job(
            state="PENDING",
            state_reason="Resources",
            allocated_nodes="n1",
            num_nodes=1,
            layout={},
            required_nodes="n3",
            end_time=T0 + 10**6,
        )
    )
    assert (j.state, j.reason, j.gpus, j.nodes, j.required_nodes) == ("PENDING", "Resources", 2, (), ("n3",))
    assert j.start_time is None and j.expected_start == datetime.fromtimestamp(T0 + 5, UTC)
    assert j.end_time is None


def test_pending_job_asking_gpus_per_job_is_read_once_from_squeue():
    calls = []

    class Cli:
        def jobs(self):
            calls.append("squeue")
            return [SimpleNamespace(job_id=42, gpus=3), SimpleNamespace(job_id=7, gpus=0)]

        def job(self, jid):
            calls.append(f"scontrol {jid}")
            return SimpleNamespace(job_id=int(jid), gpus=3)

    class Api:
        class Jobs:
            @staticmethod
            def load():
                return {42: pending}

        class Job:
            @staticmethod
            def load(jid):
                return pending

        RPCError = PyslurmError = type("Never", (Exception,), {})

    pending = job(state="PENDING", gres_per_node={}, layout={}, allocated_nodes=None, num_nodes=1)
    backend = PyslurmBackend(cli=Cli())
    backend._pyslurm = Api
    assert [j.gpus for j in backend.jobs()] == [3] and [j.gpus for j in backend.jobs()] == [3]
    assert calls == ["squeue"]  # once per job, not per pass
    backend._per_job_gpus.clear()
    assert backend.job(42).gpus == 3 and backend.job(42).gpus == 3
    assert calls == ["squeue", "scontrol 42"]
    asks_per_node = job(state="PENDING", layout={}, allocated_nodes=None, num_nodes=1)
    assert not backend._asks_unknown(asks_per_node)


def test_node_allocation_from_jobs_where_the_node_tres_lack_gpus():
    n = node_from(node(allocated_gres={}), held={"n1": 3})
    assert (n.gpus_total, n.gpus_alloc) == (4, 3)
    assert node_from(node(allocated_gres={"gpu": 1}), held={"n1": 3}).gpus_alloc == 1  # read when listed


def test_finished_job_exit_and_states():
    j = PyslurmBackend()._job(job(state="COMPLETED", exit_code=3, exit_code_signal=0, layout={}))
    assert (j.exit_code, j.exit_signal, j.is_finished) == (3, None, True)
    completing = PyslurmBackend()._job(job(state="COMPLETING", layout={}))
    assert completing.is_active and "COMPLETING" in completing.states and completing.exit_code is None


def test_submit_fields_map_or_fall_back():
    fields = submit_fields(
        SubmitOptions(
            partition="train",
            job_name="x",
            gres="gpu:2",
            nodes=1,
            nodelist="n1",
            time=5,
            output="/j/%j.out",
            requeue=False,
            signal="B:USR1@30",
            hold=True,
        ).as_mapping()
    )
    assert fields["partitions"] == "train" and fields["gres_per_node"] == "gpu:2"
    assert fields["time_limit"] == 5 and fields["is_requeueable"] is False and fields["priority"] == 0
    assert fields["signal"] == {"signal": int(signal.SIGUSR1), "time": 30, "batch_only": True}
    assert submit_fields({"time": "1:00:00"})["time_limit"] == "1:00:00"
    assert submit_fields({"isense-worker": True}) is None  # a SPANK option: sbatch does it
    assert submit_fields(SubmitOptions(extra={"qos": "low"}).as_mapping()) is None
    assert submit_fields({}) == {}


def test_submit_as_another_user_and_plugin_options_go_through_sbatch():
    seen = []

    class Cli:
        def submit(self, script, options, *, as_user=None):
            seen.append((options, as_user))
            return 7

        def version(self):
            return "22.05.8"

    backend = PyslurmBackend(cli=Cli())
    assert backend.submit("#!/bin/sh\n", {"partition": "x"}, as_user="nobody") == 7
    assert backend.submit("#!/bin/sh\n", {"isense-worker": True}) == 7
    assert [u for _, u in seen] == ["nobody", None]
