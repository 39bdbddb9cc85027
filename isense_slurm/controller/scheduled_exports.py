"""Earnings exports run by `isense serve` on [exports] cron (APScheduler's CronTrigger).

Same code path as `isense export` (meter.exports.run_export): closed periods only,
atomic files with checksums, one exports-ledger entry per period, late rows reported.
A failed run logs one line and waits for the next firing; it never stops the daemon.
"""

from __future__ import annotations

import logging

from isense_slurm.errors import ConfigError, IsenseError
from isense_slurm.meter.exports import run_export

log = logging.getLogger("isense.controller")

JOB_NAME = "isense-export"


def check_cron(cfg) -> None:
    """Parse [exports] cron fully at start-up, so a bad expression is a config error."""
    if not cfg.exports.cron:
        return
    from apscheduler.triggers.cron import CronTrigger  # APScheduler loads only where a cron is set

    try:
        CronTrigger.from_crontab(cfg.exports.cron)
    except ValueError as err:
        raise ConfigError(f"{cfg.path}: exports.cron: {err}") from None


def export_once(cfg) -> None:
    try:
        result = run_export(cfg.ledger.path, cfg.exports.period, cfg.exports.format, cfg.exports.dir)
    except IsenseError as err:
        log.error("scheduled export failed: %s", err)
        return
    log.info(
        "scheduled export %s %s: %s (%d rows, sha256 %s)",
        result.period,
        result.format,
        result.action,
        result.rows,
        result.sha256[:12],
    )
    for late in result.late:
        log.error("scheduled export: %s", late.message())


def schedule_exports(cfg):
    """A `scheduled` hook for controller.daemon.ControllerDaemon, or None when [exports] cron is off."""
    if not cfg.exports.cron:
        return None

    def hook(agent) -> None:
        agent.add_cron(cfg.exports.cron, lambda: export_once(cfg), JOB_NAME)
        log.info(
            "exports: %s of %s as %s into %s on cron %r",
            cfg.exports.period,
            "the ledger",
            cfg.exports.format,
            cfg.exports.dir,
            cfg.exports.cron,
        )

    return hook
