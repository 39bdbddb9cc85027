"""`isense doctor`: the live cluster and this host against what isense needs.

doctor_gather.gather() reads (Slurm through the access layer, the local files); check()
is pure and turns the facts into findings, one line each:
    OK   what is right
    WARN what is off -> what to change
    FAIL what breaks isense -> what to change
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from dataclasses import dataclass

from isense_slurm.admin.doctor_gather import Facts, is_null
from isense_slurm.admin.slurm_conf import kill_wait_needed
from isense_slurm.controller.observe import pool_nodes
from isense_slurm.slurm import Partition

LEVELS = ("OK", "WARN", "FAIL")


@dataclass(frozen=True)
class Finding:
    level: str
    what: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.level:<4} {self.what}" + (f" -> {self.fix}" if self.fix else "")


def _seconds(text: str | None) -> float | None:
    m = re.match(r"\s*(\d+(?:\.\d+)?)", text or "")
    return float(m.group(1)) if m else None


def check(cfg, facts: Facts) -> list[Finding]:
    s = cfg.slurm
    out: list[Finding] = []
    ok = lambda what: out.append(Finding("OK", what))  # noqa: E731
    warn = lambda what, fix: out.append(Finding("WARN", what, fix))  # noqa: E731
    fail = lambda what, fix: out.append(Finding("FAIL", what, fix))  # noqa: E731

    if facts.slurm_error:
        fail(f"Slurm does not answer: {facts.slurm_error}", "start slurmctld / set SLURM_CONF, then run doctor again")
    else:
        ok(f"Slurm {facts.version} answers")
        out.extend(_check_slurm(cfg, facts))

    if facts.account is None:
        fail(
            f"service account {s.service_account!r} does not exist on this host",
            f"create it (useradd --system {s.service_account}) on this host and every node",
        )
    else:
        ok(f"service account {s.service_account} exists (uid {facts.account[0]})")
    if facts.secret_problem:
        fail(f"worker secret: {facts.secret_problem}", "run `isense secrets init` as root")
    else:
        mode, gid = facts.secret_mode or (0, -1)
        if mode & 0o007:
            fail(f"worker secret {cfg.secrets.dir}/worker.key is readable by others (mode {mode:o})", "chmod 0640 it")
        elif facts.account and gid != facts.account[1] and not mode & 0o040:
            warn(
                "worker secret is not readable by the service account's group",
                f"chgrp {s.service_account} {cfg.secrets.dir}/worker.key; chmod 0640 it",
            )
        else:
            ok(f"worker secret present in {cfg.secrets.dir}")
    if facts.ledger_problem:
        fail(f"ledger {cfg.ledger.path}: {facts.ledger_problem}", "fix [ledger] path or the folder's permissions")
    else:
        ok(f"ledger {cfg.ledger.path} is writable")
    if facts.job_dir_problem:
        fail(
            f"job dir {s.job_dir}: {facts.job_dir_problem}",
            f"mkdir -p {s.job_dir}; chown {s.service_account} {s.job_dir}",
        )
    else:
        ok(f"job dir {s.job_dir} is writable by {s.service_account}")
    if facts.wake_problem:
        warn(
            f"submit wake file {s.submit_wake}: {facts.wake_problem}",
            f"install -d -o {_slurm_user(facts)} {s.submit_wake.parent} (slurmctld's job_submit.lua writes it;"
            " isense serve must run where it can see it)",
        )
    if facts.config_problem:
        fail(
            f"config {cfg.path}: {facts.config_problem}",
            f"chmod o+r {cfg.path} (worker jobs read it as {s.service_account}; keep secrets out of it)",
        )
    elif facts.account is not None:
        ok(f"config {cfg.path} is readable by {s.service_account}")
    out.extend(_check_workers_start(cfg, facts))
    return out


def _check_workers_start(cfg, facts: Facts) -> list[Finding]:
    """Whether the service account can start a worker and its vLLM; whether the running
    controller holds nodes back because workers end before they serve."""
    s = cfg.slurm
    out: list[Finding] = []
    if facts.executables_skipped and facts.account is not None:
        out.append(
            Finding(
                "WARN",
                f"worker and vLLM executables not tried as {s.service_account}: {facts.executables_skipped}",
                "run isense doctor as root",
            )
        )
    for c in facts.executables:
        if c.problem is None:
            out.append(Finding("OK", f"{c.what} starts as {s.service_account} ({c.command})"))
        else:
            fix = (
                "make it and its folders readable and executable by the service account"
                if c.what.startswith("worker")
                else "fix [worker] vllm_executable (the vLLM of the nodes' virtualenv), or its permissions"
            )
            out.append(Finding("FAIL", f"{c.what} cannot start as {s.service_account}: {c.command}: {c.problem}", fix))
    if facts.held_back is not None:
        for h in facts.held_back:
            out.append(
                Finding(
                    "FAIL",
                    f"controller holds back {h.get('model')} on {h.get('node')}: "
                    f"{h.get('text') or h.get('last_reason')}",
                    f"read {s.job_dir}/isense-{h.get('last_job_id')}.out and fix the cause; one worker tries after the"
                    " back-off, and one that serves ends it",
                )
            )
        if not facts.held_back:
            out.append(Finding("OK", "isense serve answers: no node held back for failing workers"))
    return out


class _Findings(list):
    """Findings in order, added by level."""

    def ok(self, what: str) -> None:
        self.append(Finding("OK", what))

    def warn(self, what: str, fix: str) -> None:
        self.append(Finding("WARN", what, fix))

    def fail(self, what: str, fix: str) -> None:
        self.append(Finding("FAIL", what, fix))


def _check_slurm(cfg, facts: Facts) -> list[Finding]:
    out = _Findings()
    preempt = facts.config.get("PreemptType", "")
    if preempt == "preempt/partition_prio":
        out.ok("PreemptType=preempt/partition_prio")
    else:
        out.fail(
            f"PreemptType={preempt or '(unset)'}: training cannot take lent GPUs back by partition",
            "set PreemptType=preempt/partition_prio and PreemptMode=REQUEUE (isense slurm-conf)",
        )
    parts = {p.name: p for p in facts.partitions}
    lend = parts.get(cfg.slurm.lend_partition)
    _check_lend_partition(cfg.slurm, lend, out)
    _check_pools(cfg.slurm, facts, parts, lend, out)
    _check_kill_wait(cfg.slurm, facts.config, out)
    out.extend(_check_hook("Prolog", facts.config.get("Prolog"), facts.prolog_files, "isense-prolog"))
    out.extend(_check_hook("Epilog", facts.config.get("Epilog"), facts.epilog_files, "isense-epilog"))
    _check_scheduling(cfg.slurm, facts, out)
    return out


def _check_lend_partition(s, lend: Partition | None, out: _Findings) -> None:
    if lend is None:
        out.fail(
            f"lend partition {s.lend_partition!r} does not exist",
            "add it (isense slurm-conf prints the line) and `scontrol reconfigure`",
        )
        return
    if lend.state != "UP":
        out.warn(f"lend partition {lend.name} is {lend.state}", f"scontrol update PartitionName={lend.name} State=UP")
    modes = set(lend.preempt_mode.replace(",", " ").split())
    if modes & {"REQUEUE", "CANCEL"}:
        out.ok(f"lend partition {lend.name}: PreemptMode={lend.preempt_mode}, PriorityTier={lend.priority_tier}")
    else:
        out.fail(
            f"lend partition {lend.name} has PreemptMode={lend.preempt_mode}: workers would not be preempted",
            f"set PreemptMode=REQUEUE on PartitionName={lend.name}",
        )
    if lend.grace_time:
        out.warn(
            f"lend partition {lend.name} has GraceTime={lend.grace_time}: workers get SIGTERM late and "
            f"are killed GraceTime to GraceTime+30 s after the training job asks",
            f"set GraceTime=0 on PartitionName={lend.name}",
        )
    if lend.max_time is not None and lend.max_time < s.max_job_minutes:
        out.warn(
            f"lend partition {lend.name} MaxTime={lend.max_time} min < max_job_minutes {s.max_job_minutes}",
            "raise MaxTime or lower [slurm] max_job_minutes",
        )


def _check_pools(s, facts: Facts, parts: dict[str, Partition], lend: Partition | None, out: _Findings) -> None:
    pool = pool_nodes(s.pools, facts.nodes)
    if not pool:
        out.fail(f"pools {', '.join(s.pools)} name no node Slurm knows", "fix [slurm] pools (partitions or node lists)")
        return
    gpus = sum(n.gpus_total for n in pool)
    what = f"pools {', '.join(s.pools)}: {len(pool)} nodes, {gpus} GPUs"
    if gpus:
        out.ok(what)
    else:
        out.fail(what, "declare the GPUs as GRES (Gres=gpu:N in slurm.conf, gres.conf)")
    outside = [n.name for n in pool if s.lend_partition not in n.partitions]
    if outside:
        out.warn(
            f"{len(outside)} pool nodes are not in {s.lend_partition} ({', '.join(outside[:8])})",
            f"add them to PartitionName={s.lend_partition} Nodes=",
        )
    if lend is None:
        return
    for part in sorted({p for n in pool for p in n.partitions} - {s.lend_partition}):
        tier = parts[part].priority_tier if part in parts else None
        if tier is not None and tier <= lend.priority_tier:
            out.fail(
                f"partition {part} (PriorityTier {tier}) cannot preempt {lend.name} "
                f"(PriorityTier {lend.priority_tier})",
                f"give PartitionName={part} a PriorityTier above {lend.priority_tier}",
            )
        elif tier is not None:
            out.ok(f"partition {part} (PriorityTier {tier}) preempts {lend.name}")


def _check_kill_wait(s, conf: dict[str, str], out: _Findings) -> None:
    kill_wait = _seconds(conf.get("KillWait"))
    needed = kill_wait_needed(s.drain_seconds)
    if kill_wait is None:
        out.warn("KillWait not readable from scontrol show config", f"set KillWait={needed}")
    elif kill_wait <= s.drain_seconds:
        out.fail(
            f"KillWait={kill_wait:g} s <= drain_seconds {s.drain_seconds:g}: Slurm kills workers mid-drain",
            f"set KillWait={needed} (or lower [slurm] drain_seconds)",
        )
    elif kill_wait < needed:
        out.warn(
            f"KillWait={kill_wait:g} s leaves a worker no time to stop vLLM after its drain", f"set KillWait={needed}"
        )
    elif kill_wait > needed + 25:
        out.warn(
            f"KillWait={kill_wait:g} s: a stuck worker delays training that long",
            f"KillWait={needed} is enough for drain_seconds {s.drain_seconds:g}",
        )
    else:
        out.ok(f"KillWait={kill_wait:g} s covers drain_seconds {s.drain_seconds:g} (+ vLLM stop)")


def _check_scheduling(s, facts: Facts, out: _Findings) -> None:
    """PrologFlags, the scheduler, job_submit.lua and the SPANK plugin."""
    conf = facts.config
    flags = {f.strip().lower() for f in (conf.get("PrologFlags") or "").split(",")}
    if "alloc" in flags:
        out.ok("PrologFlags=Alloc: the prolog cleans every node of a job before it starts")
    else:
        out.warn(
            "PrologFlags has no Alloc: a multi-node job's other nodes are cleaned only at their first step",
            "set PrologFlags=Alloc",
        )
    if "backfill" not in (conf.get("SchedulerType") or ""):
        out.warn(
            f"SchedulerType={conf.get('SchedulerType')}: --time-min needs backfill; worker limits are not "
            "fitted to holes",
            "set SchedulerType=sched/backfill",
        )
    if s.submit_wake is not None:
        plugins = {p.strip().removeprefix("job_submit/") for p in (conf.get("JobSubmitPlugins") or "").split(",")}
        if "lua" in plugins:
            out.ok("JobSubmitPlugins has lua: job_submit.lua wakes make way on each submit")
        else:
            out.warn(
                "JobSubmitPlugins has no lua: [slurm] submit_wake is never written, so reclaim waits for"
                " slurmctld's next scheduling pass (up to 1 s more)",
                "set JobSubmitPlugins=lua and install job_submit.lua (isense slurm-conf)",
            )
    if facts.plugin:
        out.ok("SPANK plugin loaded (sbatch --isense-worker)")
    else:
        out.warn(
            "SPANK plugin not loaded: workers run without containment",
            "install etc-slurm/spank/ and its plugstack line (isense slurm-conf, docs/spank.md)",
        )


def _check_hook(name: str, value: str | None, files: list[str], script: str) -> list[Finding]:
    if is_null(value):
        return [
            Finding(
                "FAIL",
                f"{name} is not set: no GPU cleanup and no reclaim records",
                f"set {name}=/etc/slurm/{name.lower()}.d/* and link {script} there (isense slurm-conf)",
            )
        ]
    if any(os.path.basename(f) == script for f in files):
        return [Finding("OK", f"{name} runs {script} ({value})")]
    if not files:
        return [
            Finding(
                "WARN",
                f"{name}={value}: its files are not visible on this host",
                f"make sure every node's {name} runs {script}",
            )
        ]
    return [Finding("WARN", f"{name}={value} does not run {script}", f"link {script} into it (isense slurm-conf)")]


def _slurm_user(facts: Facts) -> str:
    return facts.config.get("SlurmUser", "slurm").split("(")[0] or "slurm"


def service_group(account: str) -> str:
    try:
        return grp.getgrgid(pwd.getpwnam(account).pw_gid).gr_name
    except KeyError:
        return account
