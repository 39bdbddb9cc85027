"""Hook events over real HTTP: the hooks' sender and spool against the daemon's route
(reclaim.events), and whole prolog/epilog runs with a real config and secret.
No Slurm here: the job's environment is given as Slurm gives it (see the notes). The
service account is a user that does not exist, so these prologs clean nothing on this
shared host (test_gpu_clean and the cluster tests cover cleaning)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hook_receiver import REPO, EventReceiver, free_port, write_hook_config
from isense_slurm.hooks import run
from isense_slurm.hooks.markers import marker_path, write_marker
from isense_slurm.hooks.send import post_json
from isense_slurm.hooks.spool import Spool
from isense_slurm.secrets import create_secret, hook_token, load_secret

NOBODY = "isense-test-nobody"  # service account of these configs: no such user


@pytest.fixture
def secret(tmp_path):
    create_secret(tmp_path / "secrets")
    return load_secret(tmp_path / "secrets")


@pytest.fixture
def receiver(secret):
    rx = EventReceiver(secret)
    yield rx
    rx.close()


def gpus_free(node="n1", job="5"):
    return {"kind": "gpus_free", "node": node, "gpus": [0, 1], "time": 1_700_000_000.0, "job_id": job}


def test_route_accepts_valid_batches_and_answers_204(receiver, secret):
    status, _ = post_json(
        receiver.url + "/internal/events",
        hook_token(secret, "n1"),
        {"events": [gpus_free(job="5"), gpus_free(job="6")]},
        2.0,
    )
    assert status == 204
    status, _ = post_json(receiver.url + "/internal/events", hook_token(secret, "n1"), gpus_free(job="7"), 2.0)
    assert status == 204
    assert [e["job_id"] for e in receiver.events] == ["5", "6", "7"]


def test_route_refuses_bad_tokens_and_bad_fields(receiver, secret):
    url = receiver.url + "/internal/events"
    assert post_json(url, "nope", {"events": [gpus_free()]}, 2.0)[0] == 401
    # A token is good for its own node only.
    assert post_json(url, hook_token(secret, "n2"), {"events": [gpus_free("n1")]}, 2.0)[0] == 401
    status, text = post_json(url, hook_token(secret, "n1"), {"events": [{**gpus_free(), "gpus": "all"}]}, 2.0)
    assert status == 400 and "events[0].gpus" in json.loads(text)["error"]["message"]
    status, text = post_json(url, hook_token(secret, "n1"), {"events": [gpus_free(), {"kind": "x"}]}, 2.0)
    assert status == 400 and "events[1].node" in text
    assert receiver.events == []


def job_env(tmp_path, config, **over):
    env = {
        "SLURM_JOB_ID": "300",
        "SLURMD_NODENAME": "n7",
        "SLURM_JOB_USER": "trainer",
        "SLURM_JOB_PARTITION": "train",
        "SLURM_JOB_GPUS": "0,1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "ISENSE_CONFIG": str(config),
        "ISENSE_HOOK_LOG": str(tmp_path / "hooks.log"),
        "ISENSE_HOOK_SPOOL": str(tmp_path / "spool"),
    }
    env.update(over)
    return env


def test_prolog_and_epilog_send_their_events(tmp_path, receiver):
    config = write_hook_config(
        tmp_path, receiver.url, tmp_path / "secrets", job_dir=tmp_path / "jobs", service_account=NOBODY
    )
    assert run.main("prolog", job_env(tmp_path, config)) == 0
    start = receiver.wait_for(kind="job_start", job_id="300")
    assert (start["node"], start["gpus"], start["user"], start["cleaned"]) == ("n7", [0, 1], "trainer", [])
    assert f"service account '{NOBODY}' unknown here" in (tmp_path / "hooks.log").read_text()
    assert run.main("epilog", job_env(tmp_path, config, SLURM_JOB_EXIT_CODE2="0:0")) == 0
    free = receiver.wait_for(kind="gpus_free", job_id="300")
    assert free["gpus"] == [0, 1]
    assert not receiver.matching(kind="worker_end")  # a training job is no worker

    # A worker: its prolog sends nothing; its epilog reads the SIGTERM marker.
    (tmp_path / "jobs").mkdir()
    worker = dict(SLURM_JOB_ID="301", SLURM_JOB_USER=NOBODY, SLURM_JOB_PARTITION="inference")
    assert run.main("prolog", job_env(tmp_path, config, **worker)) == 0
    write_marker(marker_path(tmp_path / "jobs", "301"), 1_700_000_123.5)
    assert (
        run.main("epilog", job_env(tmp_path, config, SLURM_JOB_EXIT_CODE2="0:0", SLURM_JOB_RESTART_COUNT="1", **worker))
        == 0
    )
    end = receiver.wait_for(kind="worker_end", job_id="301")
    assert (end["reason"], end["restart_count"], end["exit_code2"]) == ("preempted", 1, "0:0")
    assert end["sigterm_time"] == 1_700_000_123.5
    receiver.wait_for(kind="gpus_free", job_id="301")
    assert not receiver.matching(kind="job_start", job_id="301")
    lines = (tmp_path / "hooks.log").read_text().splitlines()
    assert len(lines) == 4 and all("sent" in line for line in lines[:2] + lines[3:])
    assert "isense worker: nothing to clean" in lines[2]


def test_daemon_down_spools_then_the_next_run_sends_the_spool_first(tmp_path, secret):
    port = free_port()
    config = write_hook_config(tmp_path, f"http://127.0.0.1:{port}", tmp_path / "secrets", service_account=NOBODY)
    assert run.main("epilog", job_env(tmp_path, config, SLURM_JOB_ID="401")) == 0
    assert run.main("epilog", job_env(tmp_path, config, SLURM_JOB_ID="402")) == 0
    spooled = Spool(tmp_path / "spool", "n7").peek()
    assert [(e["kind"], e["job_id"]) for e in spooled] == [("gpus_free", "401"), ("gpus_free", "402")]
    assert "spooled 2 event(s): cannot connect" in (tmp_path / "hooks.log").read_text().splitlines()[1]

    rx = EventReceiver(secret, port=port)
    try:
        assert run.main("epilog", job_env(tmp_path, config, SLURM_JOB_ID="403")) == 0
        assert [e["job_id"] for e in rx.events] == ["401", "402", "403"]
        assert rx.requests == 1  # the spool and the new event in one POST
    finally:
        rx.close()
    assert Spool(tmp_path / "spool", "n7").peek() == []
    assert "sent 3 event(s) (2 from the spool)" in (tmp_path / "hooks.log").read_text().splitlines()[2]


def test_a_batch_the_daemon_refuses_is_dropped_not_resent_forever(tmp_path, receiver):
    config = write_hook_config(tmp_path, receiver.url, tmp_path / "secrets", service_account=NOBODY)
    Spool(tmp_path / "spool", "n7").put([{"kind": "gpus_free", "node": "n7", "gpus": "bad", "time": 1.0}])
    assert run.main("epilog", job_env(tmp_path, config, SLURM_JOB_ID="501")) == 0
    assert [e["job_id"] for e in receiver.events] == ["501"]
    assert Spool(tmp_path / "spool", "n7").peek() == []
    assert "dropped 1 spooled event(s) refused" in (tmp_path / "hooks.log").read_text()


def test_hook_imports_stay_light(tmp_path):
    """The hooks load no aiohttp, sqlite, asyncio or http.client: start-up is on every job's path."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from isense_slurm.hooks import run; "
        "run.main('epilog', {'ISENSE_CONFIG': sys.argv[2], 'ISENSE_HOOK_LOG': sys.argv[3], "
        "'ISENSE_HOOK_SPOOL': sys.argv[4]}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'sqlite3', 'sqlite_utils', 'asyncio', 'http', 'email', 'rich', 'ssl')))"
    )
    config = write_hook_config(
        tmp_path, f"http://127.0.0.1:{free_port()}", tmp_path / "secrets", service_account=NOBODY
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code, str(REPO), str(config), str(tmp_path / "log"), str(tmp_path / "spool")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
