"""Parsing what real Slurm printed: fixtures under tests/fixtures/slurm/<version>/.

Each version's fixtures come from the same scenario (tests/fixtures/slurm/record): n4
drained with a reason that has spaces; train-a (2 GPUs on n1), isense-worker (2 GPUs
on n2, comment), train-multi (1 GPU on each of n1 and n2) running; train-wait pending
for resources; isense-held held; isense-preempted requeued by train-reclaim (4 GPUs on
n3); train-fail exited 3. The same assertions hold for every version and every source
(JSON and `scontrol show -o`), so the typed views do not depend on who answered.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest

from isense_slurm.slurm.cli_backend import summarize_stderr
from isense_slurm.slurm.parse_json import jobs_from_json, json_errors, nodes_from_json, slurm_release
from isense_slurm.slurm.parse_scontrol import (
    jobs_from_scontrol,
    nodes_from_scontrol,
    parse_line,
    partitions_from_scontrol,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "squeue.json").exists())


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    # scontrol prints local time; the fixtures were recorded with TZ=UTC.
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def load(version: str, name: str):
    path = FIXTURES / version / name
    return json.loads(path.read_text()) if name.endswith(".json") else path.read_text()


def node_sources(version: str) -> dict[str, list]:
    sources = {
        "sinfo --json": nodes_from_json(load(version, "sinfo.json")),
        "scontrol show -o -d node": nodes_from_scontrol(load(version, "scontrol-node.txt")),
    }
    if (FIXTURES / version / "scontrol-node.json").exists():
        sources["scontrol show node --json"] = nodes_from_json(load(version, "scontrol-node.json"))
    return sources


def job_sources(version: str) -> dict[str, dict]:
    sources = {
        "squeue --json": jobs_from_json(load(version, "squeue.json")),
        "scontrol show -o -d job": jobs_from_scontrol(load(version, "scontrol-job.txt")),
    }
    if (FIXTURES / version / "scontrol-job.json").exists():
        sources["scontrol show job --json"] = jobs_from_json(load(version, "scontrol-job.json"))
    return {src: {j.name: j for j in jobs} for src, jobs in sources.items()}


def test_fixtures_exist_for_22_05_and_a_newer_release():
    assert "22.05" in VERSIONS
    assert any(v > "23" for v in VERSIONS), VERSIONS


@pytest.mark.parametrize("version", VERSIONS)
def test_release_is_read_from_meta(version):
    release = slurm_release(load(version, "squeue.json"))
    assert release and release.startswith(version)


# --- nodes ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_nodes_state_gpus_and_partitions(version):
    for source, nodes in node_sources(version).items():
        by_name = {n.name: n for n in nodes}
        assert sorted(by_name) == ["n1", "n2", "n3", "n4"], source
        n1, n3 = by_name["n1"], by_name["n3"]
        assert (n1.state, n1.flags, n1.usable) == ("MIXED", frozenset(), True), source
        assert (n1.gpus_total, n1.gpus_alloc, n1.gpus_idle) == (4, 3, 1), source
        assert (n3.gpus_alloc, n3.gpus_idle) == (4, 0), source
        assert set(n1.partitions) == {"train", "inference"}, source
        assert n1.features == ("fakegpu",), source
        assert n1.cpus == 8, source
        assert n1.reason is None, source


@pytest.mark.parametrize("version", VERSIONS)
def test_drained_node_keeps_its_reason(version):
    for source, nodes in node_sources(version).items():
        n4 = next(n for n in nodes if n.name == "n4")
        assert n4.state == "IDLE" and "DRAIN" in n4.flags, source
        assert not n4.usable, source
        assert n4.state_text == "idle+drain", source
        assert n4.reason == "fan swap: waiting for parts", source
        assert n4.gpus_alloc == 0 and n4.gpus_total == 4, source


@pytest.mark.parametrize("version", VERSIONS)
def test_node_reason_author_and_time_agree_between_sources(version):
    sources = node_sources(version)
    stamps = {
        src: next((n.reason_user, n.reason_time) for n in nodes if n.name == "n4") for src, nodes in sources.items()
    }
    assert len(set(stamps.values())) == 1, stamps
    user, when = next(iter(stamps.values()))
    assert user == "root"
    assert when is not None and when.tzinfo is not None


# --- jobs -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_running_jobs(version):
    for source, jobs in job_sources(version).items():
        a = jobs["train-a"]
        assert (a.state, a.user, a.partition) == ("RUNNING", "trainer", "train"), source
        assert (a.gpus, a.gpus_per_node, a.nodes, a.node_count) == (2, 2, ("n1",), 1), source
        assert a.gpu_indices == (("n1", (0, 1)),), source
        assert a.time_limit == 60, source
        assert a.start_time and a.end_time - a.start_time == timedelta(minutes=60), source
        assert a.expected_start is None and a.reason is None, source
        assert a.submit_time <= a.start_time, source
        assert a.is_active and not a.is_pending and not a.is_finished, source

        w = jobs["isense-worker"]
        assert (w.user, w.partition, w.gpus, w.nodes) == ("isense", "inference", 2, ("n2",)), source
        assert w.comment == "isense:tiny-llama", source
        assert w.time_limit == 30 and w.restart_count == 0 and w.preempt_time is None, source

        m = jobs["train-multi"]
        assert (m.nodes, m.node_count, m.gpus, m.gpus_per_node) == (("n1", "n2"), 2, 2, 1), source
        assert [node for node, _ in m.gpu_indices] == ["n1", "n2"], source
        assert all(len(idx) == 1 for _, idx in m.gpu_indices), source

        r = jobs["train-reclaim"]
        assert (r.nodes, r.gpus, r.time_limit) == (("n3",), 4, 90), source
        assert r.gpu_indices == (("n3", (0, 1, 2, 3)),), source


@pytest.mark.parametrize("version", VERSIONS)
def test_pending_held_and_requeued_jobs(version):
    for source, jobs in job_sources(version).items():
        wait = jobs["train-wait"]
        assert (wait.state, wait.reason) == ("PENDING", "Resources"), source
        assert (wait.gpus, wait.nodes, wait.start_time, wait.end_time) == (4, (), None, None), source
        assert wait.time_limit == 20 and wait.is_pending, source

        held = jobs["isense-held"]
        assert (held.state, held.reason, held.gpus) == ("PENDING", "JobHeldUser", 1), source
        assert held.time_limit is None, source  # no --time: the partition's UNLIMITED

        pre = jobs["isense-preempted"]
        assert (pre.state, pre.restart_count, pre.nodes) == ("PENDING", 1, ()), source
        assert pre.reason == "BeginTime", source
        # A requeued job may start again only after the credential lifetime.
        assert pre.expected_start and pre.expected_start > pre.submit_time, source
        assert pre.end_time is None and pre.gpus == 4, source


@pytest.mark.parametrize("version", VERSIONS)
def test_failed_job_keeps_exit_code(version):
    for source, jobs in job_sources(version).items():
        f = jobs["train-fail"]
        assert (f.state, f.reason, f.exit_code, f.exit_signal) == ("FAILED", "NonZeroExitCode", 3, None), source
        assert f.is_finished and f.gpus == 0 and f.nodes == ("n3",), source


@pytest.mark.parametrize("version", VERSIONS)
def test_json_and_scontrol_give_the_same_jobs(version):
    sources = job_sources(version)
    reference_source, reference = next(iter(sources.items()))
    assert len(reference) == 8
    for source, jobs in sources.items():
        assert jobs.keys() == reference.keys(), source
        for name, job in jobs.items():
            expected = reference[name]
            if job.std_out != expected.std_out:  # JSON may keep %j unexpanded
                job = job.__class__(**{**job.__dict__, "std_out": expected.std_out})
            assert job == expected, f"{name}: {source} vs {reference_source}"


# --- partitions -------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_partitions(version):
    parts = {p.name: p for p in partitions_from_scontrol(load(version, "scontrol-partition.txt"))}
    train, inference = parts["train"], parts["inference"]
    assert train.is_default and not inference.is_default
    assert (train.priority_tier, train.preempt_mode) == (10, "OFF")
    assert (inference.priority_tier, inference.preempt_mode, inference.grace_time) == (1, "REQUEUE", 0)
    assert inference.nodes == ("n1", "n2", "n3", "n4")
    assert train.max_time is None and train.state == "UP"
    assert train.total_cpus == 32 and train.total_nodes == 4


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_refused_submission_reads_as_one_line(version):
    line = summarize_stderr("sbatch", load(version, "sbatch-invalid-partition.stderr"))
    assert "\n" not in line
    assert "invalid partition specified: nope" in line.lower()


@pytest.mark.parametrize("version", VERSIONS)
def test_controller_down_is_reported(version):
    down = FIXTURES / version / "squeue-controller-down.json"
    text = down.read_text()
    start = text.find("{")
    if start >= 0:  # 22.05: exit 0 with the failure inside the JSON
        assert json_errors(json.loads(text[start:]))
    else:
        assert "controller" in text.lower()
    line = summarize_stderr("scontrol", load(version, "scontrol-controller-down.stderr"))
    assert "Unable to contact slurm controller" in line


# --- scontrol line format ---------------------------------------------------------------


def test_values_with_spaces_and_repeated_keys():
    r = parse_line(
        "NodeName=n1 OS=Linux 6.1 #1 SMP  RealMemory=7900 State=IDLE+DRAIN "
        "Nodes=n1 GRES=gpu:1(IDX:0) Nodes=n2 GRES=gpu:1(IDX:3) "
        "Reason=fan swap: see ticket=42 [root@2026-01-02T03:04:05]"
    )
    assert r["OS"] == "Linux 6.1 #1 SMP"
    assert r["RealMemory"] == "7900"
    assert r.all("Nodes") == ["n1", "n2"]
    assert r.all("GRES") == ["gpu:1(IDX:0)", "gpu:1(IDX:3)"]
    # lower-case words with '=' stay in the value: scontrol keys are CamelCase
    assert r["Reason"] == "fan swap: see ticket=42 [root@2026-01-02T03:04:05]"


def test_not_responding_suffix_becomes_a_flag():
    (node,) = nodes_from_scontrol("NodeName=n9 State=IDLE* Gres=gpu:2 CPUTot=4\n")
    assert node.state == "IDLE" and "NOT_RESPONDING" in node.flags and not node.usable


def test_no_jobs_message_gives_no_jobs():
    assert jobs_from_scontrol("No jobs in the system\n") == []
