"""The validated config as frozen dataclasses: what every process reads.

Stdlib only (see the package docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from isense_slurm.availability import Window, available_at, available_until
from isense_slurm.config.values import format_host_port

MAX_PRICE_PER_MTOK = 1000.0  # anything above is a typo (price per token, cents, ...)
# Flags the worker sets itself for each job; a model's vllm_args must not override them.
WORKER_OWNED_VLLM_FLAGS = ("--host", "--port", "--api-key", "--served-model-name")
SLURM_BACKENDS = ("cli", "pyslurm")


@dataclass(frozen=True)
class SlurmConfig:
    lend_partition: str
    service_account: str
    pools: list[str]
    max_lend_share: float
    min_idle_seconds: int
    availability: list[Window]
    tick_seconds: float
    drain_seconds: float
    max_job_minutes: int
    job_dir: Path
    # File the job_submit hook rewrites on each submit (None: no hook, Slurm reclaims alone).
    submit_wake: Path | None = None
    # No crash loops: after this many workers of a model on a node in a row end before
    # serving, that pair backs off backoff_seconds, doubled per further failure, capped.
    backoff_after_failures: int = 3
    backoff_seconds: float = 60.0
    backoff_max_seconds: float = 1800.0
    # How isense talks to Slurm: "cli" (its commands) or "pyslurm" (its C API, built per Slurm).
    backend: str = "cli"

    def available_at(self, dt: datetime) -> bool:
        """Whether lending is allowed at wall time `dt` (no windows: always)."""
        return available_at(self.availability, dt)

    def available_until(self, dt: datetime, horizon: timedelta) -> datetime | None:
        """End of the lending time that contains `dt` (capped at dt + horizon), or None."""
        return available_until(self.availability, dt, horizon)


@dataclass(frozen=True)
class GatewayConfig:
    listen_host: str
    listen_port: int
    advertise_url: str
    max_body_bytes: int
    retry_after_seconds: int
    heartbeat_timeout_seconds: float

    @property
    def listen(self) -> str:
        return format_host_port(self.listen_host, self.listen_port)


@dataclass(frozen=True)
class WorkerConfig:
    vllm_executable: str
    startup_timeout_seconds: float
    heartbeat_seconds: float
    env: dict[str, str]
    advertise_host: str  # "" means the node's hostname
    bind_host: str
    nice: int = 10  # vLLM's niceness: a starting training job and the node's daemons get the CPU first


@dataclass(frozen=True)
class LedgerConfig:
    path: Path


@dataclass(frozen=True)
class SecretsConfig:
    dir: Path


@dataclass(frozen=True)
class RevenueConfig:
    operator_share: float
    currency: str
    raw_gpu_hour_price: float


@dataclass(frozen=True)
class ExportsConfig:
    cron: str  # crontab expression (local time); "" = `isense serve` runs no exports
    period: str  # "yesterday"
    format: str  # "csv" | "jsonl"
    dir: Path


@dataclass(frozen=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: str  # local path or a model id vLLM can load on the nodes
    gpus: int
    context_length: int
    weight: float
    vllm_args: list[str]
    price: Price


@dataclass(frozen=True)
class Config:
    path: Path
    slurm: SlurmConfig
    gateway: GatewayConfig
    worker: WorkerConfig
    ledger: LedgerConfig
    secrets: SecretsConfig
    revenue: RevenueConfig
    models: list[ModelConfig] = field(default_factory=list)
    exports: ExportsConfig = ExportsConfig("", "yesterday", "csv", Path("/var/lib/isense/exports"))

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)
