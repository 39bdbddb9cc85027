"""The node prolog: before a job that is not an isense worker, its GPUs must carry no
process of the service account; then the controller hears that the job started.

A worker's own prolog has nothing to clean (its GPUs were idle); it only removes a
stale SIGTERM marker of an earlier run of the same job id.
"""

from __future__ import annotations

import pwd

from isense_slurm.contracts.events import cleaned_process, job_start_event
from isense_slurm.gpu import clean_gpus
from isense_slurm.hooks.jobenv import JobFacts
from isense_slurm.hooks.markers import drop_marker, marker_path

CLEAN_TIMEOUT_SECONDS = 3.0  # under the wrapper's `timeout 5`, with room to send


def run(facts: JobFacts, cfg, clock) -> tuple[list[dict], str]:
    """(events to send, what to log). `clock()` gives the wall time."""
    if cfg is None:
        return [], "no config: nothing cleaned"
    if facts.is_worker(cfg):
        if facts.job_id:
            drop_marker(marker_path(cfg.slurm.job_dir, facts.job_id))
        return [], "isense worker: nothing to clean"

    try:
        service_uid = pwd.getpwnam(cfg.slurm.service_account).pw_uid
    except KeyError:
        service_uid = None
    cleaned, note = [], "no GPUs"
    report = None
    if service_uid is None:
        note = f"service account {cfg.slurm.service_account!r} unknown here: nothing cleaned"
    elif facts.gpus:
        report = clean_gpus(facts.gpus, service_uid, CLEAN_TIMEOUT_SECONDS, node=facts.node)
        sigkilled = set(report.sigkilled)
        cleaned = [cleaned_process(p.pid, p.cmd, list(p.gpus), p.source, p.pid in sigkilled) for p in report.found]
        pids = f" (pids {', '.join(str(c['pid']) for c in cleaned)})" if cleaned else ""
        note = (
            f"cleaned {len(cleaned)} process(es){pids} in {report.total_s * 1000:.0f} ms"
            f"{' (nvml)' if report.nvml else ''}"
        )
        if report.survivors:
            note += f"; SURVIVORS {report.survivors}"
        if report.others:
            note += f"; other users' processes on these GPUs: {[p.pid for p in report.others]}"
        if report.error:
            note += f"; {report.error}"
    event = job_start_event(
        job_id=facts.job_id,
        node=facts.node,
        user=facts.user,
        partition=facts.partition,
        gpus=facts.gpus,
        # When the prolog is done cleaning: the job starts right after.
        time=clock(),
        cleaned=cleaned,
        clean_seconds=round(report.total_s, 4) if report else 0.0,
        survivors=report.survivors if report else [],
    )
    return [event], note
