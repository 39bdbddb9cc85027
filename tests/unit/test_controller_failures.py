"""controller/failures.py and the agent: workers that end before serving are counted from
squeue alone, and a failing (node, model) is held back, logged once and shown."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from isense_slurm.config import load_config
from isense_slurm.controller.agent import Agent
from isense_slurm.controller.failures import WorkerWatch, last_output_line, output_path
from isense_slurm.controller.memory import Memory, Submitted
from isense_slurm.controller.observe import Scope, build_snapshot
from isense_slurm.slurm import Job, Node

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 5, 6, 14, 0, 0)
SCOPE = Scope(lend_partition="inference", service_account="isense", pools=("train",))
PARTS = ("train", "inference")


def utc(local: datetime) -> datetime:
    return local.astimezone(UTC)


def node(name: str) -> Node:
    return Node(name=name, state="IDLE", gpus_total=4, partitions=PARTS)


def worker_job(job_id, node_name, state="RUNNING", exit_code=None, name="isense-tiny-llama") -> Job:
    nodes = () if state == "PENDING" else (node_name,)
    return Job(
        job_id=job_id,
        name=name,
        user="isense",
        state=state,
        partition="inference",
        gpus=4,
        nodes=nodes,
        node_count=1,
        required_nodes=(node_name,),
        submit_time=utc(NOW - timedelta(seconds=5)),
        exit_code=exit_code,
    )


def observe(jobs, memory, now=NOW):
    return build_snapshot(now, [node("n1"), node("n2")], list(jobs), SCOPE, memory)


def test_last_output_line_skips_blank_lines_and_says_why_when_missing(tmp_path):
    path = output_path(tmp_path, "77")
    assert path == tmp_path / "isense-77.out"
    assert last_output_line(path) == f"(no output file {path})"
    path.write_text("starting\n" + "x" * 10_000 + "\nisense: error: vLLM exited with code 1\n\n  \n")
    assert last_output_line(path) == "isense: error: vLLM exited with code 1"
    path.write_text("")
    assert last_output_line(path) == "(empty output file)"


def test_a_worker_that_fails_before_serving_counts_with_its_last_line(tmp_path):
    output_path(tmp_path, "10").write_text("bash: /opt/isense/bin/isense: Permission denied\n")
    memory = Memory()
    watch = WorkerWatch(tmp_path, served=lambda job_id: False)
    watch.follow("10", "n1", "tiny-llama")  # submitted; it ends before the next tick
    (end,) = watch.update(observe([worker_job(10, "n1", "FAILED", exit_code=126)], memory), memory, NOW)
    assert (end.job_id, end.node, end.model, end.state, end.exit_code) == ("10", "n1", "tiny-llama", "FAILED", 126)
    (f,) = watch.records()
    assert (f.node, f.model, f.count) == ("n1", "tiny-llama", 1)
    assert f.last_reason == "FAILED, exit 126: bash: /opt/isense/bin/isense: Permission denied"
    assert watch.watched == {}


def test_served_cancelled_preempted_and_old_workers_do_not_count(tmp_path):
    memory = Memory()
    served = {"1"}
    watch = WorkerWatch(tmp_path, served=lambda job_id: job_id in served, stopped=lambda job_id: job_id == "4")
    live = [worker_job(1, "n1"), worker_job(2, "n1"), worker_job(3, "n2"), worker_job(4, "n2", "PENDING")]
    watch.update(observe(live + [worker_job(9, "n1", "FAILED")], memory), memory, NOW)  # 9: ended before we looked
    assert sorted(watch.watched) == ["1", "2", "3", "4"] and watch.watched["1"].served
    watch.note_stopped(["2"])  # the controller cancelled it
    ended = [
        worker_job(1, "n1", "COMPLETED"),
        worker_job(2, "n1", "CANCELLED"),
        worker_job(3, "n2", "PREEMPTED"),
        worker_job(4, "n2", "COMPLETED"),
    ]
    ends = watch.update(observe(ended, memory), memory, NOW + timedelta(seconds=5))
    assert sorted(e.job_id for e in ends) == ["1", "2", "3", "4"]
    assert watch.records() == ()


def test_a_serving_worker_clears_its_pair_at_once(tmp_path):
    memory = Memory()
    serving: set[str] = set()
    watch = WorkerWatch(tmp_path, served=lambda job_id: job_id in serving)
    for i in range(3):
        watch.follow(str(i), "n1", "tiny-llama")
        watch.update(observe([worker_job(i, "n1", "FAILED", exit_code=1)], memory), memory, NOW)
    assert watch.records()[0].count == 3
    watch.update(observe([worker_job(5, "n1")], memory), memory, NOW)
    assert watch.records()[0].count == 3
    serving.add("5")
    watch.update(observe([worker_job(5, "n1")], memory), memory, NOW)
    assert watch.records() == ()


def test_a_submit_squeue_never_lists_counts_once_it_is_forgotten(tmp_path):
    memory = Memory()
    watch = WorkerWatch(tmp_path, served=lambda job_id: False)
    memory.submitted(Submitted("20", "n2", 4, "tiny-llama", NOW))
    assert watch.update(observe([], memory), memory, NOW) == []
    later = NOW + timedelta(seconds=61)
    (end,) = watch.update(observe([], memory, later), memory, later)
    assert (end.job_id, end.state) == ("20", "")
    assert watch.records()[0].last_reason.startswith("ended (Slurm no longer lists it): (no output file")


def test_without_a_served_source_nothing_counts(tmp_path):
    memory = Memory()
    watch = WorkerWatch(tmp_path)
    watch.follow("1", "n1", "tiny-llama")
    watch.update(observe([worker_job(1, "n1", "FAILED")], memory), memory, NOW)
    assert watch.records() == ()


# --- the agent, with a Slurm whose workers all fail at once ------------------------------


class FailingSlurm:
    """Two idle nodes; every worker submitted fails before the next squeue, writing one
    line of output into the job dir."""

    def __init__(self, job_dir: Path):
        self.job_dir = job_dir
        self.jobs_list: list[Job] = []
        self.submits: list[str] = []
        self.next_id = 100

    def nodes(self):
        return [node("n1"), node("n2")]

    def jobs(self):
        return list(self.jobs_list)

    def reservations(self):
        return []

    def submit(self, script, options, *, as_user=None):
        self.next_id += 1
        self.submits.append(options.nodelist)
        (self.job_dir / f"isense-{self.next_id}.out").write_text(
            f"job {self.next_id}\nisense: vLLM exited with code 1 before becoming healthy\n"
        )
        self.jobs_list.append(worker_job(self.next_id, options.nodelist, "FAILED", exit_code=3))
        return self.next_id

    def cancel(self, job_id, *, signal=None):
        raise AssertionError("nothing to cancel")


def agent_for(tmp_path: Path, slurm, served=lambda job_id: False) -> Agent:
    cfg = load_config(REPO / "dev" / "isense.dev.toml")
    cfg = replace(
        cfg,
        slurm=replace(
            cfg.slurm,
            job_dir=tmp_path,
            min_idle_seconds=0,
            backoff_after_failures=3,
            backoff_seconds=60,
            backoff_max_seconds=600,
        ),
    )
    return Agent(cfg, slurm, plugin=False, served=served)


def test_the_agent_backs_off_a_crash_loop_and_logs_it_once(tmp_path, caplog):
    slurm = FailingSlurm(tmp_path)
    agent = agent_for(tmp_path, slurm)
    caplog.set_level(logging.INFO, logger="isense.controller")
    for _ in range(30):
        agent.tick()
    assert sorted(slurm.submits) == ["n1"] * 3 + ["n2"] * 3  # not 60
    holding = [r.getMessage() for r in caplog.records if "holding back" in r.getMessage()]
    assert len(holding) == 2, holding
    assert holding[0].startswith("holding back tiny-llama on n1: 3 workers ended before serving in a row (last: job 10")
    assert "FAILED, exit 3: isense: vLLM exited with code 1 before becoming healthy); back-off 60 s" in holding[0]
    view = agent.status()["held_back"]
    assert [(h["node"], h["model"], h["failures"], h["state"]) for h in view] == [
        ("n1", "tiny-llama", 3, "backing-off"),
        ("n2", "tiny-llama", 3, "backing-off"),
    ]
    assert view[0]["last_reason"] == "FAILED, exit 3: isense: vLLM exited with code 1 before becoming healthy"
    assert view[0]["until"] > view[0]["backoff_seconds"]
    assert any(line.startswith("hold tiny-llama on n1:") for line in agent.status()["plan"])


def test_the_agent_releases_a_pair_when_a_worker_serves(tmp_path, caplog):
    slurm = FailingSlurm(tmp_path)
    agent = agent_for(tmp_path, slurm)
    for _ in range(4):
        agent.tick()
    assert len(agent.status()["held_back"]) == 2
    # An older worker on n1 (adopted after a restart, say) turns out to serve.
    slurm.jobs_list.append(worker_job(5, "n1"))
    agent.watch.served = lambda job_id: job_id == "5"
    caplog.set_level(logging.INFO, logger="isense.controller")
    agent.tick()
    assert [h["node"] for h in agent.status()["held_back"]] == ["n2"]
    assert "released tiny-llama on n1: a worker served" in caplog.text


def test_the_agent_adopts_running_workers_from_their_start_and_dates_requeued_runs_back(tmp_path):
    """Pending worker jobs hold no GPUs and are not lent; a running one the ledger does not
    know is adopted from Slurm's start; a run registered after its start is dated back."""
    from isense_slurm.meter.ledger import Ledger

    with Ledger.open(tmp_path / "l.db") as ledger:
        agent = Agent(
            load_config(REPO / "dev" / "isense.dev.toml"), FailingSlurm(tmp_path), ledger=ledger, plugin=False
        )
        started = utc(NOW - timedelta(seconds=100))
        pending = worker_job(5, "n1", "PENDING")
        agent._date_run("5", pending, None)
        assert ledger.worker("5") is None
        running = replace(worker_job(6, "n1"), start_time=started)
        agent._date_run("6", running, None)
        adopted = ledger.worker("6")
        assert adopted is not None and (adopted.state, adopted.started_at) == ("lent", started.timestamp())
        ledger.worker_event("7", state="serving", model="tiny-llama", gpus=4, node="n2", at=started.timestamp() + 40)
        agent._date_run("7", replace(worker_job(7, "n2"), start_time=started), ledger.worker("7"))
        dated = ledger.worker("7")
        assert dated is not None and (dated.state, dated.started_at) == ("serving", started.timestamp())
