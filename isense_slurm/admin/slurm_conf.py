"""The Slurm configuration isense needs, as snippets for the admin (`isense slurm-conf`),
and the numbers `isense doctor` checks a live cluster against.

Pure: the caller passes the pool's node list (from the live cluster when it answers) and
the Slurm release to write for; what differs by release is said in comments, the
settings are the same from 22.05 to 26.05 (docs/slurm-versions.md).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

PLUGIN_PATH = "/usr/local/lib/isense/isense.so"  # `make -C etc-slurm/spank install`
PLUGSTACK_DIR = "/etc/slurm/plugstack.conf.d"
PROLOG_DIR = "/etc/slurm/prolog.d"
EPILOG_DIR = "/etc/slurm/epilog.d"
# After its drain (drain_seconds) a worker gives vLLM 2 s before SIGKILL (worker/main.py
# KILL_GRACE_SECONDS), plus a second for the exit and the epilog to start.
STOP_MARGIN_SECONDS = 3.0
LEND_TIER = 1
TRAIN_TIER = 10
# The release the text is for when Slurm does not answer and no --slurm-version is given:
# Debian stable's (trixie), one of the releases the test matrix runs.
ASSUMED_RELEASE = "24.11"
OLDEST_RELEASE = (22, 5)  # older Slurm is not supported (docs/slurm-versions.md)
_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")

Release = tuple[int, int, int | None]  # major, minor, patch (None: not given)


def parse_release(text: str) -> Release | None:
    """(24, 11, 5) from "24.11.5", (23, 2, None) from "23.02"; None when it reads as no release."""
    m = _RELEASE.match(text.strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3)) if m.group(3) is not None else None


def kill_wait_needed(drain_seconds: float) -> int:
    """Smallest KillWait (s) that lets a worker drain and stop before Slurm's SIGKILL."""
    return int(math.ceil(drain_seconds + STOP_MARGIN_SECONDS))


def checkout_root() -> Path:
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Site:
    lend_partition: str
    service_account: str
    service_group: str
    pools: tuple[str, ...]
    pool_partitions: tuple[str, ...]  # pools that are partitions
    pool_nodes: str | None  # compact node list of the pools, when known
    max_job_minutes: int
    drain_seconds: float
    root: Path  # the checkout: etc-slurm/ (prolog.d/, epilog.d/, job_submit.lua, spank/) lives there
    submit_wake: Path | None = None  # [slurm] submit_wake
    slurm_version: str = ""  # "24.11.5" or "23.02"; "" (or unreadable): ASSUMED_RELEASE
    version_from: str = ""  # how it is known, for the header: "--slurm-version", ...


def _for_release(site: Site) -> tuple[Release, str]:
    """The release the text is written for, and the header line that says so."""
    release = parse_release(site.slurm_version) if site.slurm_version else None
    if release is None:
        return (
            parse_release(ASSUMED_RELEASE) or (24, 11, None),
            f"# For Slurm {ASSUMED_RELEASE}, assumed: Slurm did not answer here (for yours: --slurm-version X.Y).",
        )
    how = f" ({site.version_from})" if site.version_from else ""
    return release, f"# For Slurm {site.slurm_version}{how}."


def _at_least(release: Release, major: int, minor: int, patch: int = 0) -> bool:
    # A release given without its patch level counts as every patch of it.
    return (release[0], release[1], release[2] if release[2] is not None else patch) >= (major, minor, patch)


def render(site: Site, source: str) -> str:
    nodes = site.pool_nodes or f"<the nodes of {', '.join(site.pools)}>"
    release, release_line = _for_release(site)
    lines = [
        f"# isense: Slurm settings to lend {', '.join(site.pools)} through partition {site.lend_partition}",
        f"# (from {source}; review, merge with your files, then `scontrol reconfigure` and restart slurmd)",
        release_line,
        "",
        *_slurm_conf_lines(site, release),
        "",
        *_partition_lines(site, nodes),
        "",
        "# ---- gres.conf ---------------------------------------------------------------",
        "# GPUs as Slurm GRES (NVML autodetection, or File= lines per node):",
        "AutoDetect=nvml",
        "# NodeName=gpu[01-16] Name=gpu File=/dev/nvidia[0-7]",
        "",
        *(_cgroup_lines() if _at_least(release, 24, 5) else []),
        "# ---- plugstack.conf ----------------------------------------------------------",
        f"include {PLUGSTACK_DIR}/*.conf",
        "",
        f"# ---- {PLUGSTACK_DIR}/isense.conf (every node and login host) ----",
        "# `make -C etc-slurm/spank install` puts the plugin there; add your users' data paths to mask=.",
        f"required {PLUGIN_PATH} service_account={site.service_account} mask=/home",
        "",
        *(_job_submit_lines(site, release) if site.submit_wake is not None else []),
        "# ---- prolog.d / epilog.d (every compute node) -------------------------------",
        f"mkdir -p {PROLOG_DIR} {EPILOG_DIR}",
        f"ln -s {site.root / 'etc-slurm' / 'prolog.d' / 'isense-prolog'} {PROLOG_DIR}/50-isense",
        f"ln -s {site.root / 'etc-slurm' / 'epilog.d' / 'isense-epilog'} {EPILOG_DIR}/50-isense",
    ]
    return "\n".join(lines) + "\n"


def _slurm_conf_lines(site: Site, release: Release) -> list[str]:
    kill_wait = kill_wait_needed(site.drain_seconds)
    lines = [
        "# ---- slurm.conf ------------------------------------------------------------",
        "# Training takes lent GPUs back by partition priority. isense submits workers with",
        "# --no-requeue, so REQUEUE and CANCEL both end a preempted worker at once.",
        "PreemptType=preempt/partition_prio",
        "PreemptMode=REQUEUE",
    ]
    if _at_least(release, 24, 11, 1):
        lines += [
            "# Slurm 24.11.1+ refuses jobs with `--signal=R:...` while PreemptMode is OFF globally:",
            "# keep it on. isense's workers use no --signal (GraceTime=0 sends their SIGTERM).",
        ]
    lines += [
        "# Worker time limits are fitted to the holes backfill forecasts (--time-min).",
        "SchedulerType=sched/backfill",
        "# Start batch jobs at submit time rather than up to 3 s later (keep your other",
        "# SchedulerParameters on the same line).",
        "SchedulerParameters=batch_sched_delay=0",
        f"# SIGKILL {kill_wait} s after SIGTERM: a worker drains for drain_seconds ({site.drain_seconds:g})",
        f"# and stops vLLM within {STOP_MARGIN_SECONDS:g} s more. Also the worst case a training job",
        "# waits for a worker that does not leave.",
        f"KillWait={kill_wait}",
        "# Node hooks: clean GPUs before every job; report worker ends and freed GPUs after.",
        f"Prolog={PROLOG_DIR}/*",
        f"Epilog={EPILOG_DIR}/*",
        "# Prolog at allocation on every node of a job: multi-node training jobs get clean",
        "# GPUs on all their nodes before their first step.",
        "PrologFlags=Alloc",
    ]
    if _at_least(release, 24, 5):
        lines += [
            "# Not PrologFlags=RunInJob (24.05+; hooks inside the job's cgroup): isense's hooks clean",
            "# and report from outside the job and need only Alloc, and RunInJob implies Contain",
            "# (proctrack/cgroup). isense is not tested with RunInJob.",
        ]
    lines += [
        "PlugStackConfig=/etc/slurm/plugstack.conf",
        "GresTypes=gpu",
    ]
    return lines + _submit_and_metrics_lines(site, release)


def _submit_and_metrics_lines(site: Site, release: Release) -> list[str]:
    if site.submit_wake is not None:
        lines = [
            "# job_submit.lua wakes isense serve on each submit: it stops the workers a new",
            "# training job would preempt before slurmctld's next pass (add lua to your list).",
            "JobSubmitPlugins=lua",
        ]
    else:
        lines = [
            "# Faster reclaim (make way): set [slurm] submit_wake in isense.toml and run",
            "# `isense slurm-conf` again for the JobSubmitPlugins=lua lines.",
        ]
    if _at_least(release, 25, 11):
        lines += [
            "# Slurm 25.11+ slurmctld serves OpenMetrics itself (MetricsType=metrics/openmetrics,",
            "# GET /metrics/... on its port; off while PrivateData is set). isense needs none of it:",
            "# its own /metrics (isense serve) counts lending, tokens and reclaims.",
        ]
    return lines


def _partition_lines(site: Site, nodes: str) -> list[str]:
    if site.pool_partitions:
        lines = [
            f"# The pools' partitions: add a PriorityTier above {LEND_TIER} to your existing lines.",
            *[f"PartitionName={p} ... PriorityTier={TRAIN_TIER} PreemptMode=OFF" for p in site.pool_partitions],
        ]
    else:
        lines = [f"# The training partitions over {nodes}: PriorityTier above {LEND_TIER}, PreemptMode=OFF."]
    return lines + [
        "# The lend partition: lowest tier, SIGTERM at once (GraceTime=0), only the service",
        "# account's group may submit (other low-priority jobs would count as training).",
        f"PartitionName={site.lend_partition} Nodes={nodes} PriorityTier={LEND_TIER} PreemptMode=REQUEUE"
        f" GraceTime=0 MaxTime={site.max_job_minutes} AllowGroups={site.service_group} State=UP",
    ]


def _cgroup_lines() -> list[str]:
    return [
        "# ---- cgroup.conf --------------------------------------------------------------",
        "# Nothing for isense: keep yours. Slurm 24.05+ slurmd sets up cgroups even with",
        "# proctrack/linuxproc; only a cluster without cgroups (like isense's dev cluster)",
        "# needs CgroupPlugin=disabled.",
        "",
    ]


def _job_submit_lines(site: Site, release: Release) -> list[str]:
    wake = site.submit_wake
    assert wake is not None  # called only when [slurm] submit_wake is set
    concurrent = (
        [
            "# Slurm 23.02+ may run job_submit calls concurrently: isense_wake() writes a new file",
            "# and renames it over the wake file, so isense serve never reads a partial one.",
        ]
        if _at_least(release, 23, 2)
        else []
    )
    return [
        "# ---- job_submit.lua (slurmctld host, next to slurm.conf) ---------------------",
        "# Sites with their own job_submit.lua: copy isense_wake() and its two pcall lines.",
        *concurrent,
        f"install -d -o slurm -m 0755 {wake.parent}",
        f"sed 's|^local ISENSE_WAKE_FILE = .*|local ISENSE_WAKE_FILE = \"{wake}\"|' \\",
        f"    {site.root / 'etc-slurm' / 'job_submit.lua'} > /etc/slurm/job_submit.lua",
        "",
    ]
