"""`isense reconcile` on the real dev cluster: real worker jobs (CPU vLLM) lent by `isense
serve`, real traffic through its gateway, Slurm's own accounting (slurmdbd, sacct).

A clean run agrees; after a worker's ledger row is deleted by hand, reconcile exits 3 and
names that job. The range ends while the workers still serve (both sides count a running
job up to the range's end), so the check does not depend on how fast teardown goes.
Needs slurmdbd: the host's 22.05 cluster has it (dev/cluster-accounting.bash); the
Debian roots of newer releases do not, and the module skips there, naming the version.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest

from serve_harness import REPO, Traffic, site_on_free_nodes, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.vllm]

NODES = ["n1", "n2"]


def moment(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture(scope="module")
def accounting(cluster):
    from isense_slurm.errors import ConfigError
    from isense_slurm.slurm.accounting import accounted_runs

    try:
        accounted_runs(time.time() - 60, time.time(), user="isense")
    except ConfigError as err:
        pytest.skip(f"Slurm {cluster.slurm.version()}: no accounting on this dev cluster ({err})")


@pytest.fixture(scope="module")
def site(cluster, accounting, request):
    since = time.time()
    with site_on_free_nodes(cluster, request, NODES, name="itest-reconcile") as s:
        s.since = since  # type: ignore[attr-defined]
        yield s


def reconcile(site, since: float, until: float, *flags: str) -> subprocess.CompletedProcess:
    """The command as an operator runs it (this checkout's code, the site's config)."""
    argv = [sys.executable, "-m", "isense_slurm", "--config", str(site.config), "reconcile"]
    argv += ["--since", moment(since), "--until", moment(until), *flags]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)


def served_jobs(site) -> list[str]:
    db = sqlite3.connect(site.root / "ledger.db")
    try:
        return [r[0] for r in db.execute("SELECT DISTINCT job_id FROM requests WHERE job_id IS NOT NULL ORDER BY 1")]
    finally:
        db.close()


def test_a_clean_run_agrees_and_a_removed_ledger_row_is_named(site):
    from isense_slurm.slurm.accounting import accounted_runs

    workers = site.wait_serving(2, timeout=400)
    job_ids = sorted(str(w["job_id"]) for w in workers)
    traffic = Traffic(site.url, site.key, concurrency=2, max_tokens=16, pause=0.05)
    try:
        wait_for(lambda: sum(r[2] == "ok" for r in traffic.results) >= 12, 120, "answers through the gateway")
    finally:
        results = traffic.stop()
    assert traffic.failures() == [], traffic.failures()[:3]
    until = time.time() + 1  # whole seconds for the flag; both workers still serve
    assert served_jobs(site), "no request row names a worker job"

    # slurmctld sends job records to slurmdbd on its own time: wait until sacct has both.
    def accounted():
        starts = {r.job_id: r.start for r in accounted_runs(site.since, until, user="isense") if r.start}
        return starts if set(starts) >= set(job_ids) else None

    starts = wait_for(accounted, 120, f"sacct to list worker jobs {job_ids}", interval=1)
    # A removed row must stand out from the tolerance (30 s x GPUs): each worker in the
    # range for 60 s at least, however fast vLLM started on this machine.
    until = max(until, max(starts[j] for j in job_ids) + 60)
    while time.time() < until + 1:
        time.sleep(0.5)

    clean = reconcile(site, site.since, until, "--json")
    assert clean.returncode == 0, f"exit {clean.returncode}: {clean.stdout[-3000:]} {clean.stderr[-1000:]}"
    doc = json.loads(clean.stdout)
    mine = {j["job_id"]: j for j in doc["jobs"] if j["job_id"] in job_ids}
    assert sorted(mine) == job_ids
    assert all(j["slurm_gpu_seconds"] > 0 and j["ledger_runs"] == j["slurm_runs"] == 1 for j in mine.values())
    served = sum(j["requests"] for j in mine.values())
    print(f"{len(results)} requests sent, {served} served in range; jobs: {json.dumps(list(mine.values()))}")
    assert served >= 12 and sum(j["tokens"] for j in mine.values()) > 0

    # The daemon heals its ledger from squeue every minute (a running worker job it has
    # no run of is adopted): stop it first, or it may put the removed row back before
    # reconcile reads the ledger. The workers run on as Slurm jobs.
    site.kill(signal.SIGKILL)
    victim = job_ids[0]
    db = sqlite3.connect(site.root / "ledger.db")
    try:
        with db:
            assert db.execute("DELETE FROM workers WHERE job_id = ?", [victim]).rowcount >= 1
    finally:
        db.close()
    broken = reconcile(site, site.since, until)
    assert broken.returncode == 3, f"exit {broken.returncode}: {broken.stdout[-3000:]} {broken.stderr[-1000:]}"
    findings = [line for line in broken.stdout.splitlines() if line.strip().startswith("job ")]
    assert findings == [line for line in findings if f"job {victim}: not in ledger" in line] and findings, broken.stdout
    print(broken.stdout)
