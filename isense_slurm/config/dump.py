"""The effective config back in the file's own shape (loadable again), for `isense config check`."""

from __future__ import annotations

from typing import Any

from isense_slurm.config.schema import (
    Config,
    ExportsConfig,
    GatewayConfig,
    ModelConfig,
    RevenueConfig,
    SlurmConfig,
    WorkerConfig,
)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The effective config in the file's own shape (loadable again), for printing."""
    return {
        "slurm": _slurm(cfg.slurm),
        "gateway": _gateway(cfg.gateway),
        "worker": _worker(cfg.worker),
        "ledger": {"path": str(cfg.ledger.path)},
        "secrets": {"dir": str(cfg.secrets.dir)},
        "revenue": _revenue(cfg.revenue),
        "exports": _exports(cfg.exports),
        "models": [_model(m) for m in cfg.models],
    }


def _slurm(s: SlurmConfig) -> dict[str, Any]:
    return {
        "lend_partition": s.lend_partition,
        "service_account": s.service_account,
        "pools": list(s.pools),
        "max_lend_share": s.max_lend_share,
        "min_idle_seconds": s.min_idle_seconds,
        "availability": [w.text for w in s.availability],
        "tick_seconds": s.tick_seconds,
        "drain_seconds": s.drain_seconds,
        "max_job_minutes": s.max_job_minutes,
        "job_dir": str(s.job_dir),
        "submit_wake": str(s.submit_wake or ""),
        "backoff_after_failures": s.backoff_after_failures,
        "backoff_seconds": s.backoff_seconds,
        "backoff_max_seconds": s.backoff_max_seconds,
        "backend": s.backend,
    }


def _gateway(g: GatewayConfig) -> dict[str, Any]:
    return {
        "listen": g.listen,
        "advertise_url": g.advertise_url,
        "max_body_bytes": g.max_body_bytes,
        "retry_after_seconds": g.retry_after_seconds,
        "heartbeat_timeout_seconds": g.heartbeat_timeout_seconds,
    }


def _worker(w: WorkerConfig) -> dict[str, Any]:
    return {
        "vllm_executable": w.vllm_executable,
        "startup_timeout_seconds": w.startup_timeout_seconds,
        "heartbeat_seconds": w.heartbeat_seconds,
        "env": dict(w.env),
        "advertise_host": w.advertise_host,
        "bind_host": w.bind_host,
        "nice": w.nice,
    }


def _revenue(r: RevenueConfig) -> dict[str, Any]:
    return {
        "operator_share": r.operator_share,
        "currency": r.currency,
        "raw_gpu_hour_price": r.raw_gpu_hour_price,
    }


def _exports(e: ExportsConfig) -> dict[str, Any]:
    return {"cron": e.cron, "period": e.period, "format": e.format, "dir": str(e.dir)}


def _model(m: ModelConfig) -> dict[str, Any]:
    return {
        "name": m.name,
        "path": m.path,
        "gpus": m.gpus,
        "context_length": m.context_length,
        "weight": m.weight,
        "vllm_args": list(m.vllm_args),
        "price": {
            "input_per_mtok": m.price.input_per_mtok,
            "output_per_mtok": m.price.output_per_mtok,
            "cached_input_per_mtok": m.price.cached_input_per_mtok,
        },
    }
