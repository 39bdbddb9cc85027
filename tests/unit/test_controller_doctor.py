"""`isense doctor`'s judgement of the facts, and `isense slurm-conf`'s snippets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from doctor_world import healthy
from isense_slurm.admin.doctor import Facts, check
from isense_slurm.admin.slurm_conf import ASSUMED_RELEASE, Site, kill_wait_needed, parse_release, render
from isense_slurm.config import load_config
from isense_slurm.slurm import Partition
from isense_slurm.slurm.parse_scontrol import config_from_scontrol

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "dev" / "isense.dev.toml")  # drain_seconds 2, pools ["train"]


def levels(findings) -> dict[str, str]:
    return {f.what: f.level for f in findings}


def failing(findings) -> list[str]:
    return [f.line() for f in findings if f.level == "FAIL"]


def test_a_healthy_cluster_is_all_ok(cfg):
    findings = check(cfg, healthy())
    assert [f.line() for f in findings if f.level != "OK"] == []
    assert any(f.what.startswith("partition train (PriorityTier 10) preempts inference") for f in findings)


def test_lend_partition_must_be_below_the_pools(cfg):
    facts = healthy()
    facts.partitions = [
        Partition("train", priority_tier=1),
        Partition("inference", priority_tier=1, preempt_mode="REQUEUE"),
    ]
    (line,) = failing(check(cfg, facts))
    assert line == (
        "FAIL partition train (PriorityTier 1) cannot preempt inference (PriorityTier 1)"
        " -> give PartitionName=train a PriorityTier above 1"
    )


def test_preemption_off_and_missing_partition_fail(cfg):
    facts = healthy()
    facts.config = {**facts.config, "PreemptType": "preempt/none"}
    facts.partitions = [Partition("train", priority_tier=10), Partition("inference", preempt_mode="OFF")]
    lines = failing(check(cfg, facts))
    assert any(line.startswith("FAIL PreemptType=preempt/none") for line in lines)
    assert any("PreemptMode=OFF: workers would not be preempted" in line for line in lines)
    facts.partitions = [Partition("train", priority_tier=10)]
    assert any("lend partition 'inference' does not exist" in line for line in failing(check(cfg, facts)))


def test_kill_wait_against_the_drain_budget(cfg):
    assert kill_wait_needed(2) == 5 and kill_wait_needed(2.5) == 6
    facts = healthy()
    facts.config = {**facts.config, "KillWait": "2 sec"}
    assert failing(check(cfg, facts)) == [
        "FAIL KillWait=2 s <= drain_seconds 2: Slurm kills workers mid-drain -> set KillWait=5"
        " (or lower [slurm] drain_seconds)"
    ]
    facts.config = {**facts.config, "KillWait": "4 sec"}
    assert levels(check(cfg, facts))["KillWait=4 s leaves a worker no time to stop vLLM after its drain"] == "WARN"


def test_grace_time_and_hooks_and_plugin(cfg):
    facts = healthy()
    facts.partitions[1] = replace(facts.partitions[1], grace_time=30)
    facts.config = {**facts.config, "Prolog": "(null)", "PrologFlags": "(null)"}
    facts.plugin = False
    findings = check(cfg, facts)
    by_level = {f.level: [] for f in findings}
    for f in findings:
        by_level[f.level].append(f.what)
    assert any("GraceTime=30" in w for w in by_level["WARN"])
    assert any(w.startswith("SPANK plugin not loaded") for w in by_level["WARN"])
    assert any(w.startswith("PrologFlags has no Alloc") for w in by_level["WARN"])
    assert by_level["FAIL"] == ["Prolog is not set: no GPU cleanup and no reclaim records"]


def test_host_side_problems(cfg):
    facts = healthy()
    facts.account = None
    facts.secret_problem = "worker secret missing"
    facts.ledger_problem = "not writable by this user"
    facts.config_problem = "not readable by isense"
    lines = failing(check(cfg, facts))
    assert len(lines) == 4
    assert "FAIL worker secret: worker secret missing -> run `isense secrets init` as root" in lines


def test_make_way_needs_the_lua_job_submit_plugin_and_the_wake_folder(cfg):
    facts = healthy()
    facts.config["JobSubmitPlugins"] = "job_submit/require_timelimit"
    facts.config["SlurmUser"] = "slurm(64030)"
    facts.wake_problem = "its folder does not exist on this host"
    warnings = [f.line() for f in check(cfg, facts) if f.level == "WARN"]
    assert len(warnings) == 2
    assert "JobSubmitPlugins has no lua" in warnings[0] and "set JobSubmitPlugins=lua" in warnings[0]
    assert "submit wake file /var/lib/isense-dev/slurmctld/submit.wake" in warnings[1]
    assert "install -d -o slurm /var/lib/isense-dev/slurmctld" in warnings[1]
    # Without [slurm] submit_wake, the plugin is not asked for.
    off = replace(cfg, slurm=replace(cfg.slurm, submit_wake=None))
    facts.wake_problem = None
    assert [f.line() for f in check(off, facts) if f.level != "OK"] == []


def test_slurm_down_is_one_fail(cfg):
    findings = check(
        cfg, Facts(slurm_error="sinfo: Slurm controller is not reachable", account=(1, 1), secret_mode=(0o640, 1))
    )
    assert failing(findings) == [
        "FAIL Slurm does not answer: sinfo: Slurm controller is not reachable"
        " -> start slurmctld / set SLURM_CONF, then run doctor again"
    ]


def test_slurm_conf_snippets(cfg):
    site = Site("inference", "isense", "isense", ("train",), ("train",), "n[1-4]", 60, 2.0, Path("/opt/isense"))
    text = render(site, "/etc/isense/isense.toml")
    lines = text.splitlines()
    for expected in (
        "PreemptType=preempt/partition_prio",
        "KillWait=5",
        "PrologFlags=Alloc",
        "Prolog=/etc/slurm/prolog.d/*",
        "Epilog=/etc/slurm/epilog.d/*",
        "PartitionName=train ... PriorityTier=10 PreemptMode=OFF",
        "PartitionName=inference Nodes=n[1-4] PriorityTier=1 PreemptMode=REQUEUE GraceTime=0"
        " MaxTime=60 AllowGroups=isense State=UP",
        "include /etc/slurm/plugstack.conf.d/*.conf",
        "required /usr/local/lib/isense/isense.so service_account=isense mask=/home",
        "ln -s /opt/isense/etc-slurm/prolog.d/isense-prolog /etc/slurm/prolog.d/50-isense",
        "ln -s /opt/isense/etc-slurm/epilog.d/isense-epilog /etc/slurm/epilog.d/50-isense",
    ):
        assert expected in lines, expected
    assert "JobSubmitPlugins=lua" not in lines and "job_submit.lua" not in text.split("Faster reclaim")[0]
    waking = render(replace(site, submit_wake=Path("/var/spool/isense/submit.wake")), "x").splitlines()
    assert "JobSubmitPlugins=lua" in waking and "install -d -o slurm -m 0755 /var/spool/isense" in waking
    assert "    /opt/isense/etc-slurm/job_submit.lua > /etc/slurm/job_submit.lua" in waking
    unknown = render(replace(site, pool_nodes=None, drain_seconds=10), "x")
    assert "Nodes=<the nodes of train>" in unknown and "KillWait=13" in unknown.splitlines()


# What `scontrol show config` printed on the 24.11.5 dev cluster (dev/cluster up --slurm
# 24.11), the lines the doctor reads: Prolog/Epilog come as Prolog[0] = ... there.
# 26.05.5 prints these lines the same way.
CONFIG_24_11 = """\
Configuration data as of 2026-05-02T10:11:12
Epilog[0]               = /opt/isense/etc-slurm/epilog.d/isense-epilog
EpilogMsgTime           = 2000 usec
JobSubmitPlugins        = lua
KillWait                = 5 sec
PreemptMode             = REQUEUE
PreemptParameters       = (null)
PreemptType             = preempt/partition_prio
ProctrackType           = proctrack/linuxproc
Prolog[0]               = /opt/isense/etc-slurm/prolog.d/isense-prolog
PrologEpilogTimeout     = 65534
PrologFlags             = Alloc
SchedulerParameters     = batch_sched_delay=0
SchedulerType           = sched/backfill
SlurmctldHost[0]        = vm(127.0.0.1)
SlurmUser               = slurm(64030)
SLURM_VERSION           = 24.11.5
"""


def test_doctor_reads_a_24_11_config_without_false_problems(cfg):
    facts = healthy()
    facts.version = "24.11.5"
    facts.config = config_from_scontrol(CONFIG_24_11)
    assert [f.line() for f in check(cfg, facts) if f.level != "OK"] == []
    # Newer flags that imply Alloc print it too (Contain, RunInJob): still OK.
    facts.config["PrologFlags"] = "Alloc,Contain,RunInJob"
    assert [f.line() for f in check(cfg, facts) if f.level != "OK"] == []


def site_for(version: str, *, wake: bool = True, how: str = "") -> str:
    site = Site(
        "inference",
        "isense",
        "isense",
        ("train",),
        ("train",),
        "n[1-4]",
        60,
        2.0,
        Path("/opt/isense"),
        submit_wake=Path("/var/spool/isense/submit.wake") if wake else None,
        slurm_version=version,
        version_from=how,
    )
    return render(site, "x")


def test_release_numbers():
    assert parse_release("24.11.5") == (24, 11, 5) and parse_release("23.02") == (23, 2, None)
    assert parse_release("22.05.8-1") == (22, 5, 8) and parse_release("unknown") is None


# Each release's notes, by a phrase of each (oldest first): what `isense slurm-conf` adds.
NOTES = {
    "concurrent job_submit": "Slurm 23.02+ may run job_submit calls concurrently",
    "RunInJob": "Not PrologFlags=RunInJob (24.05+",
    "cgroup.conf": "# ---- cgroup.conf",
    "--signal=R:": "Slurm 24.11.1+ refuses jobs with `--signal=R:...` while PreemptMode is OFF globally",
    "OpenMetrics": "Slurm 25.11+ slurmctld serves OpenMetrics",
}


@pytest.mark.parametrize(
    "version, expected",
    [
        ("22.05.8", set()),
        ("23.02", {"concurrent job_submit"}),
        ("24.05.3", {"concurrent job_submit", "RunInJob", "cgroup.conf"}),
        ("24.11.0", {"concurrent job_submit", "RunInJob", "cgroup.conf"}),
        ("24.11", {"concurrent job_submit", "RunInJob", "cgroup.conf", "--signal=R:"}),  # any 24.11 patch
        ("24.11.5", {"concurrent job_submit", "RunInJob", "cgroup.conf", "--signal=R:"}),
        ("26.05", set(NOTES)),
    ],
)
def test_slurm_conf_notes_per_release(version, expected):
    text = site_for(version, how="--slurm-version")
    assert {name for name, phrase in NOTES.items() if phrase in text} == expected
    assert f"# For Slurm {version} (--slurm-version)." in text.splitlines()
    # What Slurm is told stays the same on every release: the notes are comments.
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == [line for line in site_for("22.05.8").splitlines() if line and not line.startswith("#")]


def test_slurm_conf_keeps_preemption_on_and_says_workers_use_no_signal():
    lines = site_for("24.11.5").splitlines()
    assert "PreemptMode=REQUEUE" in lines
    note = lines.index("PreemptMode=REQUEUE") + 1
    assert "isense's workers use no --signal" in lines[note + 1]
    # isense sets no preempt_* option, so none goes to SchedulerParameters or PreemptParameters.
    assert not [line for line in lines if "preempt_" in line or line.startswith("PreemptParameters")]


def test_slurm_conf_says_which_release_it_assumes():
    text = site_for("")  # Slurm did not answer and no --slurm-version
    assert (
        f"# For Slurm {ASSUMED_RELEASE}, assumed: Slurm did not answer here (for yours: --slurm-version X.Y)."
        in text.splitlines()
    )
    assert "RunInJob" in text  # written for the assumed release
    assert "assumed" in site_for("unknown")  # `sinfo --version` printed nothing readable
    assert NOTES["concurrent job_submit"] not in site_for("24.11.5", wake=False)  # no job_submit.lua there
