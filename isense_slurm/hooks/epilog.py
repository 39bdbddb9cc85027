"""The node epilog: a worker's end (with a reason guessed without squeue/scontrol) and,
after any job, that its GPUs are free so the controller can lend them again at once."""

from __future__ import annotations

import pwd

from isense_slurm.contracts.events import gpus_free_event, worker_end_event
from isense_slurm.contracts.states import EndReason
from isense_slurm.hooks.jobenv import JobFacts
from isense_slurm.hooks.markers import marker_path, take_marker

# Signals Slurm sends to end a job on preemption or time limit.
SLURM_STOP_SIGNALS = {"15"}


def guess_reason(sigterm_time: float | None, exit_code2: str | None) -> EndReason:
    """preempted | completed | failed from what the epilog can see. A time limit also
    sends SIGTERM and reads as "preempted" here; the controller, which knows the
    job's limit, corrects that."""
    if sigterm_time is not None:
        return EndReason.PREEMPTED
    status, _, sig = (exit_code2 or "").partition(":")
    if sig in SLURM_STOP_SIGNALS:
        return EndReason.PREEMPTED
    if status == "0" and sig in ("", "0"):
        return EndReason.COMPLETED
    return EndReason.FAILED


def run(facts: JobFacts, cfg, clock) -> tuple[list[dict], str]:
    now = clock()
    events = []
    note = ""
    if cfg is not None and facts.is_worker(cfg):
        try:
            owner = pwd.getpwnam(cfg.slurm.service_account).pw_uid
        except KeyError:
            owner = None
        sigterm = take_marker(marker_path(cfg.slurm.job_dir, facts.job_id), owner) if facts.job_id else None
        reason = guess_reason(sigterm, facts.exit_code2)
        events.append(
            worker_end_event(
                job_id=facts.job_id,
                node=facts.node,
                gpus=facts.gpus,
                time=now,
                sigterm_time=sigterm,
                exit_code=facts.exit_code,
                exit_code2=facts.exit_code2,
                derived_ec=facts.derived_ec,
                restart_count=facts.restart_count,
                reason=reason,
            )
        )
        note = f"worker ended ({reason.value}{', SIGTERM marker' if sigterm else ''}); "
    elif cfg is None:
        note = "no config; "
    events.append(gpus_free_event(job_id=facts.job_id, node=facts.node, gpus=facts.gpus, time=now))
    return events, note + f"GPUs {','.join(map(str, facts.gpus)) or '-'} free"
