"""`isense serve` on the real dev cluster with real CPU vLLM workers.

One site lends n3 and n4 (temp ledger, secret, port; those nodes' hooks point at it).
The tests run in order on it: idle nodes get serving workers with nobody acting; a
training job takes a lent node while requests keep completing through the gateway on
the other worker; with the controller killed, a training job still preempts; after a
restart the controller rebuilds its picture from squeue and the ledger and lends again
without duplicates. Timings are printed, not asserted (bench/reclaim.py measures).
"""

from __future__ import annotations

import signal
import sqlite3
import time

import pytest

from serve_harness import Traffic, site_on_free_nodes, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.vllm]

NODES = ["n3", "n4"]


@pytest.fixture(scope="module")
def site(cluster, request):
    with site_on_free_nodes(cluster, request, NODES) as s:
        yield s


def ledger(site, sql: str, *args):
    db = sqlite3.connect(site.root / "ledger.db")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_idle_nodes_get_serving_workers_with_nobody_acting(site):
    workers = site.wait_serving(2, timeout=300)
    assert sorted(w["node"] for w in workers) == NODES
    jobs = site.worker_jobs()
    assert len(jobs) == 2, f"duplicate or missing worker jobs: {[(j.job_id, j.nodes) for j in jobs]}"
    rows = ledger(site, "SELECT job_id, state, node, model FROM workers ORDER BY node")
    assert [(r[1], r[2], r[3]) for r in rows] == [("serving", "n3", "tiny-llama"), ("serving", "n4", "tiny-llama")]
    plan = site.controller()["plan"]
    assert plan[0].startswith("pool: 8 GPUs on 2 nodes; lent 8")


def test_training_takes_a_lent_node_and_requests_complete_elsewhere(site):
    (victim,) = [w for w in site.serving() if w["node"] == "n3"]
    traffic = Traffic(site.url, site.key, concurrency=2, max_tokens=16, pause=0.05)
    try:
        wait_for(lambda: len(traffic.results) >= 8, 60, "first answers through the gateway")
        job_id, submitted = site.train("n3", seconds=40)
        # Generous: on this loaded 2-core host slurmstepd has once taken over 30 s from
        # "Launching batch job" to the script's first line (the job was allocated at once).
        started = site.started_at(job_id, timeout=120)
        time.sleep(3)  # requests keep going on n4
    finally:
        results = traffic.stop()
    print(f"training job {job_id}: started {started - submitted:.2f} s after sbatch; {len(results)} requests")
    assert traffic.failures() == []
    assert any(sent > started for sent, _, _ in results), "no request was sent after the reclaim"
    after = ledger(site, "SELECT DISTINCT node FROM requests WHERE ts > ? AND status = 'ok'", started)
    assert after == [("n4",)]
    retried = ledger(site, "SELECT count(*) FROM requests WHERE attempts > 1")[0][0]
    print(f"requests retried on another worker: {retried}")

    end = wait_for(
        lambda: (
            ledger(site, "SELECT state, reason FROM workers WHERE job_id = ?", victim["job_id"])
            if ledger(site, "SELECT state FROM workers WHERE job_id = ?", victim["job_id"]) == [("ended",)]
            else None
        ),
        30,
        "the preempted worker's end in the ledger",
    )
    assert end == [("ended", "preempted")]
    reclaim = wait_for(
        lambda: ledger(
            site,
            "SELECT submit_time, sigterm_time, gpus_free_time, start_time, "
            "worker_job_id, node FROM reclaims WHERE training_job_id = ?",
            str(job_id),
        ),
        30,
        "the reclaim record",
    )
    (submit_t, sigterm_t, free_t, start_t, worker, node) = reclaim[0]
    assert (worker, node) == (victim["job_id"], "n3")
    assert None not in (submit_t, sigterm_t, free_t, start_t)
    # Slurm's submit time has whole seconds; the rest come from the hooks in order.
    assert int(submit_t) <= sigterm_t <= free_t <= start_t
    print(
        f"ledger: SIGTERM +{sigterm_t - submitted:.2f} s, GPUs free +{free_t - submitted:.2f} s,"
        f" start +{start_t - submitted:.2f} s (from sbatch)"
    )


def test_with_the_controller_killed_training_still_preempts(site):
    (worker,) = site.wait_serving(1, nodes={"n4"})
    site.kill(signal.SIGKILL)
    job_id, submitted = site.train("n4", seconds=30)
    started = site.started_at(job_id)
    print(f"controller down: training job {job_id} started {started - submitted:.2f} s after sbatch")
    job = wait_for(lambda: (j := site.slurm.job(worker["job_id"])) and j.is_finished and j, 30, "the worker job to end")
    assert job.state == "PREEMPTED" and job.restart_count == 0


def test_restart_rebuilds_the_picture_and_lends_again_without_duplicates(site):
    # Both nodes are held by training now; the worker preempted while the controller was
    # down is still open in the ledger (its epilog's event waits in the node's spool).
    site.start()
    for job_id in list(site.trainer_jobs):
        site.slurm.cancel(job_id)
    site.wait_serving(2, timeout=300)
    jobs = site.worker_jobs()
    assert sorted(j.nodes[0] for j in jobs if j.nodes) == NODES and len(jobs) == 2
    open_runs = ledger(site, "SELECT job_id, node FROM workers WHERE state != 'ended' ORDER BY node")
    assert sorted(str(j.job_id) for j in jobs) == sorted(r[0] for r in open_runs)
    reasons = ledger(site, "SELECT reason, count(*) FROM workers WHERE state = 'ended' GROUP BY reason")
    assert reasons == [("preempted", 2)]
