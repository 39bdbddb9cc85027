"""Builds each config section ([slurm], [gateway], [[models]], ...) from its TOML table."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from isense_slurm.availability import WindowError, parse_window
from isense_slurm.config.schema import (
    MAX_PRICE_PER_MTOK,
    SLURM_BACKENDS,
    WORKER_OWNED_VLLM_FLAGS,
    Config,
    ExportsConfig,
    GatewayConfig,
    LedgerConfig,
    ModelConfig,
    Price,
    RevenueConfig,
    SecretsConfig,
    SlurmConfig,
    WorkerConfig,
)
from isense_slurm.config.validate import Context, Table, show
from isense_slurm.config.values import check_host, check_http_url, format_host_port, parse_host_port

SLURM_KEYS = [
    "lend_partition",
    "service_account",
    "pools",
    "max_lend_share",
    "min_idle_seconds",
    "availability",
    "tick_seconds",
    "drain_seconds",
    "max_job_minutes",
    "job_dir",
    "submit_wake",
    "backoff_after_failures",
    "backoff_seconds",
    "backoff_max_seconds",
    "backend",
]
GATEWAY_KEYS = ["listen", "advertise_url", "max_body_bytes", "retry_after_seconds", "heartbeat_timeout_seconds"]
WORKER_KEYS = [
    "vllm_executable",
    "startup_timeout_seconds",
    "heartbeat_seconds",
    "env",
    "advertise_host",
    "bind_host",
    "nice",
]
MODEL_KEYS = ["name", "path", "gpus", "context_length", "weight", "vllm_args", "price"]
PRICE_KEYS = ["input_per_mtok", "output_per_mtok", "cached_input_per_mtok"]
EXPORTS_KEYS = ["cron", "period", "format", "dir"]

TOP_KEYS = ["slurm", "gateway", "worker", "ledger", "secrets", "revenue", "exports", "models"]


class _PriceRange(TypedDict):
    """Table.number's bounds for a price, passed as **keywords."""

    minimum: float
    maximum: float
    unit: str


def _no_space(what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if re.search(r"[\s,]", value):
            raise ValueError(f'{what} "{value}" must not contain spaces or commas')
        return value

    return check


def build(ctx: Context, doc: dict, file: Path) -> Config:
    top = Table(ctx, (), doc, TOP_KEYS)
    slurm = _slurm(top.table("slurm", SLURM_KEYS, required=True))
    worker = _worker(top.table("worker", WORKER_KEYS))
    gateway = _gateway(top.table("gateway", GATEWAY_KEYS), worker)
    ledger_t = top.table("ledger", ["path"])
    secrets_t = top.table("secrets", ["dir"])
    revenue = _revenue(top.table("revenue", ["operator_share", "currency", "raw_gpu_hour_price"]))
    return Config(
        path=file,
        slurm=slurm,
        gateway=gateway,
        worker=worker,
        ledger=LedgerConfig(path=ledger_t.folder_path("path", "/var/lib/isense/ledger.db")),
        secrets=SecretsConfig(dir=secrets_t.folder_path("dir", "/etc/isense/secrets")),
        revenue=revenue,
        models=_models(top),
        exports=_exports(top.table("exports", EXPORTS_KEYS)),
    )


def _slurm(t: Table) -> SlurmConfig:
    pools = t.string_list("pools", non_empty=True)
    for i, pool in enumerate(pools):
        if not pool.strip() or re.search(r"\s", pool):
            raise t.fail(("pools", i), f"pool {show(pool)} must be a partition, node or node list without spaces", pool)
    windows = []
    for i, text in enumerate(t.string_list("availability", [])):
        try:
            windows.append(parse_window(text))
        except WindowError as err:
            raise t.fail(("availability", i), f"bad window {show(text)}: {err}", text) from None
    return SlurmConfig(
        lend_partition=t.string("lend_partition", check=_no_space("partition")),
        service_account=t.string("service_account", check=_no_space("account")),
        pools=pools,
        max_lend_share=t.number("max_lend_share", 0.5, minimum=0, maximum=1),
        min_idle_seconds=t.integer("min_idle_seconds", 60, minimum=0),
        availability=windows,
        tick_seconds=t.number("tick_seconds", 5.0, above=0),
        drain_seconds=t.number("drain_seconds", 10.0, above=0),
        max_job_minutes=t.integer("max_job_minutes", 240, minimum=1),
        job_dir=t.folder_path("job_dir", "/var/lib/isense/jobs"),
        submit_wake=t.string("submit_wake", "", empty_ok=True, check=_absolute_file) or None,
        **_backoff(t),
        backend=t.string("backend", "cli", check=_backend),
    )


def _backend(value: str) -> str:
    if value not in SLURM_BACKENDS:
        raise ValueError(f"must be one of {', '.join(map(json.dumps, SLURM_BACKENDS))}, got {show(value)}")
    return value


def _backoff(t: Table) -> dict[str, Any]:
    after = t.integer("backoff_after_failures", 3, minimum=1)
    first = t.number("backoff_seconds", 60.0, above=0)
    cap = t.number("backoff_max_seconds", max(1800.0, first), above=0)
    if cap < first:
        raise t.fail("backoff_max_seconds", f"must be at least backoff_seconds ({first:g}), got {cap:g}")
    return {"backoff_after_failures": after, "backoff_seconds": first, "backoff_max_seconds": cap}


def _absolute_file(value: str) -> Path | str:
    """An absolute path (another daemon writes it: no folder to be relative to), or ""."""
    if not value.strip():
        return ""
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f'"{value}" must be an absolute path')
    return path


def _worker(t: Table) -> WorkerConfig:
    env = t.string_table("env", {})
    for name in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise t.fail(("env", name), "is not a valid environment variable name")
    return WorkerConfig(
        vllm_executable=t.string("vllm_executable", "vllm"),
        startup_timeout_seconds=t.number("startup_timeout_seconds", 600.0, above=0),
        heartbeat_seconds=t.number("heartbeat_seconds", 5.0, above=0),
        env=env,
        advertise_host=t.string("advertise_host", "", empty_ok=True, check=lambda v: check_host(v) if v else v),
        bind_host=t.string("bind_host", "0.0.0.0", check=check_host),
        nice=t.integer("nice", 10, minimum=0, maximum=19),
    )


def _gateway(t: Table, worker: WorkerConfig) -> GatewayConfig:
    host, port = t.string("listen", check=parse_host_port) if "listen" in t.data else ("0.0.0.0", 8000)
    default_url = f"http://{format_host_port(_reachable_host(host), port)}"
    timeout = t.number("heartbeat_timeout_seconds", max(15.0, 3 * worker.heartbeat_seconds), above=0)
    if "heartbeat_timeout_seconds" in t.data and timeout <= worker.heartbeat_seconds:
        raise t.fail(
            "heartbeat_timeout_seconds",
            f"must be greater than worker.heartbeat_seconds ({worker.heartbeat_seconds:g}), got {timeout:g}",
        )
    return GatewayConfig(
        listen_host=host,
        listen_port=port,
        advertise_url=t.string("advertise_url", default_url, check=check_http_url),
        max_body_bytes=t.integer("max_body_bytes", 1048576, minimum=1),
        retry_after_seconds=t.integer("retry_after_seconds", 5, minimum=0),
        heartbeat_timeout_seconds=timeout,
    )


def _reachable_host(listen_host: str) -> str:
    """Default advertise host: the listen address, or this host's name for a wildcard."""
    if listen_host in ("0.0.0.0", "::"):
        return socket.gethostname()
    return listen_host


def _revenue(t: Table) -> RevenueConfig:
    def currency(value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f'"{value}" is not a three-letter currency code such as "USD"')
        return value

    return RevenueConfig(
        operator_share=t.number("operator_share", 0.7, minimum=0, maximum=1),
        currency=t.string("currency", "USD", check=currency),
        raw_gpu_hour_price=t.number(
            "raw_gpu_hour_price", 2.0, minimum=0, maximum=MAX_PRICE_PER_MTOK, unit="per GPU-hour"
        ),
    )


def _exports(t: Table) -> ExportsConfig:
    def cron(value: str) -> str:
        # Five crontab fields; APScheduler's CronTrigger checks the rest when `isense serve`
        # starts (this module stays free of third-party imports).
        if value and (len(value.split()) != 5 or not re.fullmatch(r"[0-9A-Za-z*/,\- ]+", value)):
            raise ValueError(f'{show(value)} is not a crontab expression of five fields such as "15 0 * * *"')
        return value

    def period(value: str) -> str:
        if value != "yesterday":
            raise ValueError(f'{show(value)}: only "yesterday" (the last closed UTC day) can be exported on a schedule')
        return value

    def fmt(value: str) -> str:
        if value not in ("csv", "jsonl"):
            raise ValueError(f'{show(value)}: use "csv" or "jsonl"')
        return value

    return ExportsConfig(
        cron=t.string("cron", "", empty_ok=True, check=cron).strip(),
        period=t.string("period", "yesterday", check=period),
        format=t.string("format", "csv", check=fmt),
        dir=t.folder_path("dir", "/var/lib/isense/exports"),
    )


def _models(top: Table) -> list[ModelConfig]:
    if "models" not in top.data:
        raise top.fail("models", "at least one [[models]] table is required")
    entries = top.data["models"]
    if isinstance(entries, dict):
        raise top.fail("models", "must be an array of tables: write [[models]], not [models]")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise top.fail("models", f"must be an array of tables ([[models]]), got {show(entries)}")
    if not entries:
        raise top.fail("models", "at least one [[models]] table is required")
    models: list[ModelConfig] = []
    for i, entry in enumerate(entries):
        model = _model(Table(top.ctx, ("models", i), entry, MODEL_KEYS))
        first = next((j for j, m in enumerate(models) if m.name == model.name), None)
        if first is not None:
            raise top.fail(("models", i, "name"), f"duplicate model name {show(model.name)} (also models[{first}])")
        models.append(model)
    return models


def _model(t: Table) -> ModelConfig:
    def served_name(value: str) -> str:
        if re.search(r"\s", value) or not value.isprintable():
            raise ValueError(f"{show(value)} must not contain spaces or control characters")
        return value

    name = t.string("name", check=served_name)
    path = t.string("path")
    gpus = t.integer("gpus", 1, minimum=1)
    context_length = t.integer("context_length", minimum=1)
    weight = t.number("weight", 1.0, above=0)
    args = t.string_list("vllm_args", [])
    for j, arg in enumerate(args):
        flag = arg.split("=", 1)[0]
        if flag in WORKER_OWNED_VLLM_FLAGS:
            raise t.fail(("vllm_args", j), f"{flag} is set by the worker for each job; remove it", arg)
    price_t = t.table("price", PRICE_KEYS, required=True)
    price_range: _PriceRange = dict(minimum=0, maximum=MAX_PRICE_PER_MTOK, unit="per million tokens")
    input_price = price_t.number("input_per_mtok", **price_range)
    price = Price(
        input_per_mtok=input_price,
        output_per_mtok=price_t.number("output_per_mtok", **price_range),
        cached_input_per_mtok=price_t.number("cached_input_per_mtok", input_price, **price_range),
    )
    return ModelConfig(
        name=name, path=path, gpus=gpus, context_length=context_length, weight=weight, vllm_args=args, price=price
    )
