"""The isense SPANK plugin (etc-slurm/spank/) on the real dev cluster.

A worker job (`isense` with --isense-worker) must not read files under the masked
paths that the owning user's training job reads; other users cannot use the option;
bad plugstack arguments stop the plugin from loading. The files are world-readable, so
only the plugin's mounts keep the worker out.

Needs root (jobs are submitted as `trainer` and `isense` with runuser) and, for the
cluster tests, `dev/cluster up` (which installs the plugin through etc-slurm/spank/dev-install).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPANK = REPO / "etc-slurm" / "spank"
JOB_DIR = Path("/var/lib/isense-dev/jobs")
PRIVATE = Path("/srv/isense-dev-private")  # masked in the dev plugstack
HOME_AREA = Path("/home/isense-spank-test")  # under the masked /home
SERVICE, TRAINER = "isense", "trainer"
EXPORTED = {
    "plugin_name",
    "plugin_type",
    "plugin_version",
    "spank_plugin_version",
    "slurm_spank_init",
    "slurm_spank_init_post_opt",
    "slurm_spank_task_init_privileged",
}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="submits jobs as other users with runuser")


def run(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def as_user(user: str, cmd: list[str], timeout: float = 90) -> subprocess.CompletedProcess:
    """Run cmd as user with a small clean environment (sbatch exports it to the job)."""
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"HOME=/home/{user}", f"USER={user}", "LANG=C.UTF-8"]
    if "SLURM_CONF" in os.environ:
        env.append(f"SLURM_CONF={os.environ['SLURM_CONF']}")
    return run(["runuser", "-u", user, "--", *env, *cmd], timeout=timeout, cwd="/")


class Job:
    def __init__(self, proc: subprocess.CompletedProcess, out: Path):
        self.rc = proc.returncode
        self.stderr = proc.stderr
        self.output = out.read_text() if out.exists() else ""

    def value(self, key: str) -> str | None:
        m = re.search(rf"^{re.escape(key)}=(.*)$", self.output, re.M)
        return m.group(1) if m else None


def submit(user: str, script: str, *options: str, partition: str = "train") -> Job:
    """sbatch --wait a shell script as user; return its exit code and output."""
    out = JOB_DIR / f"spank-{user}-{uuid.uuid4().hex[:8]}.out"
    proc = as_user(
        user,
        [
            "sbatch",
            "--parsable",
            "--wait",
            "-p",
            partition,
            "-t",
            "2",
            "-J",
            "spank-test",
            f"--chdir={JOB_DIR}",
            f"--output={out}",
            *options,
            f"--wrap={script}",
        ],
    )
    job = Job(proc, out)
    out.unlink(missing_ok=True)
    return job


# What a job reports: whether it read each secret, and its confinement.
PROBE = "; ".join(
    [
        'printf "private=%s\\n" "$(cat {private} 2>/dev/null || echo DENIED)"',
        'printf "home=%s\\n" "$(cat {home} 2>/dev/null || echo DENIED)"',
        'printf "home_listing=%s\\n" "$(ls -A /home | tr "\\n" " ")"',
        'printf "home_mount=%s\\n" "$(findmnt -n -o FSTYPE,OPTIONS --mountpoint /home | tail -n 1)"',
        'printf "nnp=%s\\n" "$(awk \'/^NoNewPrivs:/ {{print $2}}\' /proc/self/status)"',
        'printf "worker=%s\\n" "${{ISENSE_WORKER:-}}"',
        'printf "masked=%s\\n" "${{ISENSE_MASKED:-}}"',
    ]
)


@pytest.fixture(scope="module")
def built_plugin(tmp_path_factory) -> Path:
    """Build the plugin from a copy of etc-slurm/spank/ (leaves the checkout alone)."""
    build = tmp_path_factory.mktemp("spank-build")
    for src in SPANK.iterdir():
        if src.is_file() and (src.suffix in {".c", ".h", ".map"} or src.name == "Makefile"):
            shutil.copy(src, build / src.name)
    proc = run(["make", "-C", str(build)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return build / "isense.so"


def test_plugin_builds_and_exports_only_spank_symbols(built_plugin):
    proc = run(["make", "-s", "-C", str(built_plugin.parent), "check"])
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == EXPORTED


def _scratch_conf(tmp_path: Path, plugstack_line: str) -> dict[str, str]:
    """A slurm.conf for client commands only (no daemon reads it)."""
    (tmp_path / "plugstack.conf").write_text(plugstack_line + "\n")
    (tmp_path / "slurm.conf").write_text(
        "ClusterName=spank-scratch\nSlurmctldHost=localhost(127.0.0.1)\n"
        f"PlugStackConfig={tmp_path / 'plugstack.conf'}\n"
        "NodeName=x1 NodeAddr=127.0.0.1 CPUs=1\nPartitionName=p Nodes=x1\n"
    )
    return {**os.environ, "SLURM_CONF": str(tmp_path / "slurm.conf")}


@pytest.mark.parametrize(
    "args, message",
    [
        ("service_account=isense mask=/home bogus=1", "isense: unknown plugstack argument 'bogus=1'"),
        ("service_account=isense mask=home", "isense: plugstack mask path 'home' is not absolute"),
        ("mask=/home", "isense: plugstack argument service_account= is missing"),
    ],
)
@pytest.mark.parametrize("command", ["sbatch", "srun"])
def test_bad_plugstack_arguments_refuse_to_load(built_plugin, tmp_path, command, args, message):
    env = _scratch_conf(tmp_path, f"required {built_plugin} {args}")
    proc = run([command, "--help"], env=env)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "isense:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr


def test_good_plugstack_arguments_load(built_plugin, tmp_path):
    env = _scratch_conf(tmp_path, f"required {built_plugin} service_account=isense mask=/home:/nonexistent-on-login")
    proc = run(["sbatch", "--help"], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "--isense-worker" in proc.stdout


@needs_root
def test_slurmd_refuses_to_start_on_a_missing_mask_path(built_plugin, tmp_path):
    # A scratch slurmd (own node name, port, spool): spank init runs before it binds
    # or contacts any controller, so it fails at once.
    (tmp_path / "plugstack.conf").write_text(
        f"required {built_plugin} service_account=isense mask=/home:/does/not/exist\n"
    )
    (tmp_path / "spool").mkdir()
    (tmp_path / "slurm.conf").write_text(
        "ClusterName=spank-scratch\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=6999\n"
        f"PlugStackConfig={tmp_path / 'plugstack.conf'}\nSlurmdSpoolDir={tmp_path / 'spool'}\n"
        f"SlurmdPidFile={tmp_path / 'slurmd.pid'}\nSlurmdLogFile={tmp_path / 'slurmd.log'}\n"
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSlurmdParameters=config_overrides\n"
        "NodeName=spank-x1 NodeAddr=127.0.0.1 Port=6998 CPUs=1\nPartitionName=p Nodes=spank-x1\n"
    )
    proc = run(["slurmd", "-D", "-N", "spank-x1", "-f", str(tmp_path / "slurm.conf")], timeout=30)
    assert proc.returncode != 0
    log = (tmp_path / "slurmd.log").read_text()
    errors = [line for line in log.splitlines() if "isense:" in line]
    assert len(errors) == 1, log
    assert "mask path '/does/not/exist' is not an existing directory on this node" in errors[0]
    assert "slurmd initialization failed" in log


@pytest.fixture(scope="module")
def cluster():
    proc = run(["scontrol", "ping"], timeout=15)
    assert "is UP" in proc.stdout, "dev cluster is not up: run dev/cluster up"
    conf = Path("/etc/slurm/plugstack.conf.d/isense.conf")
    assert conf.exists(), f"{conf} missing: etc-slurm/spank/dev-install did not run"


@pytest.fixture(scope="module")
def secrets(cluster):
    """World-readable secrets of `trainer` under both masked dev paths."""
    token = uuid.uuid4().hex
    HOME_AREA.mkdir(mode=0o755, exist_ok=True)
    files = [PRIVATE / "spank-test-secret.txt", HOME_AREA / "secret.txt"]
    for path in files:
        path.write_text(token + "\n")
        path.chmod(0o644)
        shutil.chown(path, TRAINER, TRAINER)
    shutil.chown(HOME_AREA, TRAINER, TRAINER)
    # Without the plugin the service account can read them: only the mask stops it.
    for path in files:
        assert as_user(SERVICE, ["cat", str(path)]).stdout.strip() == token
    yield {"token": token, "private": files[0], "home": files[1]}
    for path in files:
        path.unlink(missing_ok=True)
    HOME_AREA.rmdir()


def probe(secrets) -> str:
    return PROBE.format(private=secrets["private"], home=secrets["home"])


def node_states() -> str:
    return run(["sinfo", "-h", "-N", "-o", "%N %t"]).stdout


@pytest.mark.cluster
def test_help_shows_the_option(cluster):
    for command in ("sbatch", "srun"):
        proc = run([command, "--help"])
        assert proc.returncode == 0, proc.stderr
        line = next((ln for ln in proc.stdout.splitlines() if "--isense-worker" in ln), "")
        assert "[isense]" in line, proc.stdout


@pytest.mark.cluster
@needs_root
def test_training_job_of_owner_reads_its_files(secrets):
    job = submit(TRAINER, probe(secrets))
    assert job.rc == 0, job.stderr + job.output
    assert job.value("private") == secrets["token"]
    assert job.value("home") == secrets["token"]
    assert job.value("nnp") == "0"
    assert job.value("worker") == ""


@pytest.mark.cluster
@needs_root
def test_worker_job_cannot_read_masked_paths(secrets):
    job = submit(SERVICE, probe(secrets), "--isense-worker", partition="inference")
    assert job.rc == 0, job.stderr + job.output
    assert job.value("private") == "DENIED"
    assert job.value("home") == "DENIED"
    assert job.value("home_listing") == ""
    assert re.match(r"tmpfs +ro,nosuid,nodev,noexec", job.value("home_mount") or ""), job.output
    assert job.value("nnp") == "1"
    assert job.value("worker") == "1"
    assert job.value("masked") == f"/home:{PRIVATE}"
    assert secrets["token"] not in job.output


@pytest.mark.cluster
@needs_root
def test_steps_inside_a_worker_job_are_masked_too(secrets):
    step = f"srun -n1 sh -c {shlex.quote(probe(secrets))}"
    job = submit(SERVICE, step, "--isense-worker", partition="inference")
    assert job.rc == 0, job.stderr + job.output
    assert job.value("private") == "DENIED" and job.value("home") == "DENIED"
    assert job.value("nnp") == "1" and job.value("worker") == "1"


@pytest.mark.cluster
@needs_root
def test_service_account_without_the_option_is_masked_too(secrets):
    # Code running as the service account could submit without the option.
    job = submit(SERVICE, probe(secrets), partition="inference")
    assert job.rc == 0, job.stderr + job.output
    assert job.value("private") == "DENIED" and job.value("home") == "DENIED"
    assert job.value("nnp") == "1"
    assert job.value("worker") == ""


@pytest.mark.cluster
@needs_root
def test_other_user_is_refused_the_option(cluster):
    proc = as_user(TRAINER, ["sbatch", "--isense-worker", "-p", "inference", "--wrap=true"])
    assert proc.returncode != 0
    assert "isense: --isense-worker is reserved for the service account 'isense' (you are 'trainer')" in proc.stderr


@pytest.mark.cluster
@needs_root
def test_node_refuses_the_option_when_the_client_check_is_bypassed(cluster):
    # trainer points sbatch at a plugstack naming itself the service account; the
    # node's plugin re-checks the job's uid, fails the job and leaves the node up.
    scratch = JOB_DIR / f"spank-conf-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(mode=0o755)
    try:
        (scratch / "plugstack.conf").write_text(
            "required /usr/local/lib/isense/isense.so service_account=trainer mask=/home\n"
        )
        conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
        conf = re.sub(r"(?m)^PlugStackConfig=.*$", f"PlugStackConfig={scratch / 'plugstack.conf'}", conf)
        (scratch / "slurm.conf").write_text(conf)
        for path in scratch.iterdir():
            path.chmod(0o644)
        out = JOB_DIR / f"spank-bypass-{uuid.uuid4().hex[:8]}.out"
        proc = as_user(
            TRAINER,
            [
                "env",
                f"SLURM_CONF={scratch / 'slurm.conf'}",
                "sbatch",
                "--parsable",
                "--wait",
                "--isense-worker",
                "-p",
                "train",
                "-t",
                "2",
                f"--chdir={JOB_DIR}",
                f"--output={out}",
                "--wrap=echo task-ran",
            ],
        )
        output = out.read_text() if out.exists() else ""
        out.unlink(missing_ok=True)
    finally:
        shutil.rmtree(scratch)
    assert proc.returncode != 0, output
    assert "task-ran" not in output
    assert "isense: worker task refused: uid" in output
    assert not re.search(r"\b(drain|drng|down|fail)", node_states()), node_states()
