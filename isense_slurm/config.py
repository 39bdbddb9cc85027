"""The one isense config file (TOML), read and validated into frozen dataclasses.

Every error is one line, `FILE:LINE: dotted.key: what is wrong`, raised as ConfigError
(exit 2). tomllib reports lines only for syntax errors, so the line of a key is found
by scanning the text (best effort; see _KeyLines).

Stdlib only: `isense config check` must run on a login node with nothing else.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from isense_slurm.config_windows import Window, WindowError, available_at, available_until, parse_window
from isense_slurm.errors import ConfigError

DEFAULT_PATH = "/etc/isense/isense.toml"
ENV_VAR = "ISENSE_CONFIG"
MAX_PRICE_PER_MTOK = 1000.0  # anything above is a typo (price per token, cents, ...)
# Flags the worker sets itself for each job; a model's vllm_args must not override them.
WORKER_OWNED_VLLM_FLAGS = ("--host", "--port", "--api-key", "--served-model-name")


# ---------------------------------------------------------------------------- the API


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


def resolve_config_path(path: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Which file to read and why: ("--config" | "$ISENSE_CONFIG" | "default")."""
    if path:
        return Path(path), "--config"
    env = os.environ.get(ENV_VAR, "")
    if env:
        return Path(env), f"${ENV_VAR}"
    return Path(DEFAULT_PATH), "default"


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate the config: --config > $ISENSE_CONFIG > /etc/isense/isense.toml."""
    file, source = resolve_config_path(path)
    return parse_config(_read_text(file, source), file)


def parse_config(text: str, path: str | os.PathLike = "<string>") -> Config:
    """Validate config text; relative paths in it are taken from the file's folder."""
    file = Path(path)
    ctx = _Context(str(path), text, file.absolute().parent)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(_syntax_message(str(path), text, err)) from None
    return _build(ctx, doc, file.absolute())


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The effective config in the file's own shape (loadable again), for printing."""
    return {
        "slurm": {
            "lend_partition": cfg.slurm.lend_partition,
            "service_account": cfg.slurm.service_account,
            "pools": list(cfg.slurm.pools),
            "max_lend_share": cfg.slurm.max_lend_share,
            "min_idle_seconds": cfg.slurm.min_idle_seconds,
            "availability": [w.text for w in cfg.slurm.availability],
            "tick_seconds": cfg.slurm.tick_seconds,
            "drain_seconds": cfg.slurm.drain_seconds,
            "max_job_minutes": cfg.slurm.max_job_minutes,
            "job_dir": str(cfg.slurm.job_dir),
            "submit_wake": str(cfg.slurm.submit_wake or ""),
            "backoff_after_failures": cfg.slurm.backoff_after_failures,
            "backoff_seconds": cfg.slurm.backoff_seconds,
            "backoff_max_seconds": cfg.slurm.backoff_max_seconds,
            "backend": cfg.slurm.backend,
        },
        "gateway": {
            "listen": cfg.gateway.listen,
            "advertise_url": cfg.gateway.advertise_url,
            "max_body_bytes": cfg.gateway.max_body_bytes,
            "retry_after_seconds": cfg.gateway.retry_after_seconds,
            "heartbeat_timeout_seconds": cfg.gateway.heartbeat_timeout_seconds,
        },
        "worker": {
            "vllm_executable": cfg.worker.vllm_executable,
            "startup_timeout_seconds": cfg.worker.startup_timeout_seconds,
            "heartbeat_seconds": cfg.worker.heartbeat_seconds,
            "env": dict(cfg.worker.env),
            "advertise_host": cfg.worker.advertise_host,
            "bind_host": cfg.worker.bind_host,
            "nice": cfg.worker.nice,
        },
        "ledger": {"path": str(cfg.ledger.path)},
        "secrets": {"dir": str(cfg.secrets.dir)},
        "revenue": {
            "operator_share": cfg.revenue.operator_share,
            "currency": cfg.revenue.currency,
            "raw_gpu_hour_price": cfg.revenue.raw_gpu_hour_price,
        },
        "exports": {
            "cron": cfg.exports.cron,
            "period": cfg.exports.period,
            "format": cfg.exports.format,
            "dir": str(cfg.exports.dir),
        },
        "models": [
            {
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
            for m in cfg.models
        ],
    }


# ------------------------------------------------------------------- address parsing

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def check_host(host: str) -> str:
    """A hostname, IPv4 or IPv6 address (no brackets, no port); raises ValueError."""
    if not host:
        raise ValueError("empty host")
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f'"{host}" is not a valid IPv6 address') from None
    if re.fullmatch(r"[\d.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f'"{host}" is not a valid IPv4 address') from None
    if not _HOSTNAME_RE.match(host):
        raise ValueError(f'"{host}" is not a valid hostname')
    return host


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse "host:port" or "[v6]:port"; raises ValueError with what is wrong."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or not text[close + 1 :].startswith(":"):
            raise ValueError(f'"{text}" is not [IPv6]:port, e.g. "[::1]:8000"')
        host, port = text[1:close], text[close + 2 :]
        if ":" not in host:
            raise ValueError(f'brackets are for IPv6 addresses only, got "[{host}]"')
    else:
        if text.count(":") > 1:
            raise ValueError(f'"{text}": write IPv6 addresses in brackets, e.g. "[::]:8000"')
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f'"{text}" has no port: expected host:port, e.g. "0.0.0.0:8000"')
        if not host:
            raise ValueError(f'"{text}" has no host: use "0.0.0.0{text}" to listen on all interfaces')
    host = check_host(host)
    if not port.isdigit():
        raise ValueError(f'port "{port}" is not a number')
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 1..65535")
    return host, number


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_http_url(text: str) -> str:
    """An http(s)://host[:port][/path] URL; raises ValueError."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f'"{text}" must start with http:// or https://')
    if not parts.hostname:
        raise ValueError(f'"{text}" has no host')
    try:
        parts.port
    except ValueError:
        raise ValueError(f'"{text}" has a bad port (1..65535)') from None
    if parts.port == 0:
        raise ValueError(f'"{text}" has a bad port (1..65535)')
    check_host(parts.hostname)
    if parts.query or parts.fragment:
        raise ValueError(f'"{text}" must not carry a query or fragment')
    return text.rstrip("/")


# ------------------------------------------------------------------------ validation

_REQUIRED = object()
KeyPath = tuple  # of str and int


def _dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            out += f".{name}" if out else name
    return out


def _show(value: Any) -> str:
    """A value as TOML would spell it, shortened for a one-line message."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value)
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


class _Context:
    """The file being checked: its name, text (for lines) and folder (for relative paths)."""

    def __init__(self, name: str, text: str, folder: Path):
        self.name = name
        self.folder = folder
        self._lines = _KeyLines(text)

    def fail(self, path: KeyPath, message: str, value: Any = None) -> ConfigError:
        line = self._lines.line_of(path, value)
        where = f"{self.name}:{line}" if line else self.name
        return ConfigError(f"{where}: {_dotted(path)}: {message}")


class _Table:
    """Typed reads from one TOML table; unknown keys are refused up front."""

    def __init__(self, ctx: _Context, path: KeyPath, data: dict, known: list[str]):
        self.ctx, self.path, self.data = ctx, path, data
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f'; did you mean "{close[0]}"?' if close else f" (known: {', '.join(known)})"
                raise ctx.fail(path + (key,), f"unknown key{hint}")

    def fail(self, key: str | KeyPath, message: str, value: Any = None) -> ConfigError:
        sub = (key,) if isinstance(key, str) else key
        return self.ctx.fail(self.path + sub, message, value)

    def _get(self, key: str, default: Any) -> tuple[Any, bool]:
        if key in self.data:
            return self.data[key], True
        if default is _REQUIRED:
            raise self.fail(key, "required key is missing")
        return default, False

    def string(self, key: str, default: Any = _REQUIRED, *, empty_ok: bool = False,
               check: Callable[[str], Any] | None = None) -> Any:
        value, given = self._get(key, default)
        if not given:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, got {_show(value)} ({_kind(value)})")
        if not value.strip() and not empty_ok:
            raise self.fail(key, "must not be empty")
        if check:
            try:
                return check(value)
            except ValueError as err:
                raise self.fail(key, str(err)) from None
        return value

    def integer(self, key: str, default: Any = _REQUIRED, *, minimum: int | None = None,
                maximum: int | None = None) -> int:
        value, given = self._get(key, default)
        if given and (isinstance(value, bool) or not isinstance(value, int)):
            hint = " (no decimal point)" if isinstance(value, float) else ""
            raise self.fail(key, f"must be an integer{hint}, got {_show(value)} ({_kind(value)})")
        if given:
            self._range(key, value, minimum, maximum)
        return value

    def number(self, key: str, default: Any = _REQUIRED, *, minimum: float | None = None,
               maximum: float | None = None, above: float | None = None, unit: str = "") -> float:
        value, given = self._get(key, default)
        if not given:
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {_show(value)} ({_kind(value)})")
        if not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {_show(value)}")
        if above is not None and not value > above:
            raise self.fail(key, f"must be greater than {above:g}, got {value:g}")
        self._range(key, value, minimum, maximum, unit)
        return float(value)

    def _range(self, key, value, minimum, maximum, unit: str = "") -> None:
        unit = f" {unit}" if unit else ""
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            raise self.fail(key, f"must be between {minimum:g} and {maximum:g}{unit}, got {value:g}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be at least {minimum:g}{unit}, got {value:g}")
        if maximum is not None and value > maximum:
            raise self.fail(key, f"must be at most {maximum:g}{unit}, got {value:g}")

    def string_list(self, key: str, default: Any = _REQUIRED, *, non_empty: bool = False) -> list[str]:
        value, given = self._get(key, default)
        if not given:
            return list(value)
        if not isinstance(value, list):
            raise self.fail(key, f"must be an array of strings, got {_show(value)} ({_kind(value)})")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail((key, i), f"must be a string, got {_show(item)} ({_kind(item)})", item)
        if non_empty and not value:
            raise self.fail(key, "must list at least one entry")
        return list(value)

    def string_table(self, key: str, default: Any = _REQUIRED) -> dict[str, str]:
        value, given = self._get(key, default)
        if not given:
            return dict(value)
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table of strings, got {_show(value)} ({_kind(value)})")
        for name, item in value.items():
            if not isinstance(item, str):
                raise self.fail((key, name), f"must be a string (quote it), got {_show(item)} ({_kind(item)})")
        return dict(value)

    def table(self, key: str, known: list[str], *, required: bool = False) -> _Table:
        value, _ = self._get(key, _REQUIRED if required else {})
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {_show(value)} ({_kind(value)})")
        return _Table(self.ctx, self.path + (key,), value, known)

    def folder_path(self, key: str, default: str) -> Path:
        value = Path(self.string(key, default))
        return value if value.is_absolute() else self.ctx.folder / value


_SLURM_KEYS = ["lend_partition", "service_account", "pools", "max_lend_share", "min_idle_seconds",
               "availability", "tick_seconds", "drain_seconds", "max_job_minutes", "job_dir", "submit_wake",
               "backoff_after_failures", "backoff_seconds", "backoff_max_seconds", "backend"]
SLURM_BACKENDS = ("cli", "pyslurm")
_GATEWAY_KEYS = ["listen", "advertise_url", "max_body_bytes", "retry_after_seconds",
                 "heartbeat_timeout_seconds"]
_WORKER_KEYS = ["vllm_executable", "startup_timeout_seconds", "heartbeat_seconds", "env",
                "advertise_host", "bind_host", "nice"]
_MODEL_KEYS = ["name", "path", "gpus", "context_length", "weight", "vllm_args", "price"]
_PRICE_KEYS = ["input_per_mtok", "output_per_mtok", "cached_input_per_mtok"]
_EXPORTS_KEYS = ["cron", "period", "format", "dir"]
_TOP_KEYS = ["slurm", "gateway", "worker", "ledger", "secrets", "revenue", "exports", "models"]


def _no_space(what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if re.search(r"[\s,]", value):
            raise ValueError(f'{what} "{value}" must not contain spaces or commas')
        return value
    return check


def _build(ctx: _Context, doc: dict, file: Path) -> Config:
    top = _Table(ctx, (), doc, _TOP_KEYS)
    slurm = _slurm(top.table("slurm", _SLURM_KEYS, required=True))
    worker = _worker(top.table("worker", _WORKER_KEYS))
    gateway = _gateway(top.table("gateway", _GATEWAY_KEYS), worker)
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
        exports=_exports(top.table("exports", _EXPORTS_KEYS)),
    )


def _slurm(t: _Table) -> SlurmConfig:
    pools = t.string_list("pools", non_empty=True)
    for i, pool in enumerate(pools):
        if not pool.strip() or re.search(r"\s", pool):
            raise t.fail(("pools", i), f"pool {_show(pool)} must be a partition, node or node list without spaces", pool)
    windows = []
    for i, text in enumerate(t.string_list("availability", [])):
        try:
            windows.append(parse_window(text))
        except WindowError as err:
            raise t.fail(("availability", i), f"bad window {_show(text)}: {err}", text) from None
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
        raise ValueError(f"must be one of {', '.join(map(json.dumps, SLURM_BACKENDS))}, got {_show(value)}")
    return value


def _backoff(t: _Table) -> dict[str, Any]:
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


def _worker(t: _Table) -> WorkerConfig:
    env = t.string_table("env", {})
    for name in env:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise t.fail(("env", name), "is not a valid environment variable name")
    return WorkerConfig(
        vllm_executable=t.string("vllm_executable", "vllm"),
        startup_timeout_seconds=t.number("startup_timeout_seconds", 600.0, above=0),
        heartbeat_seconds=t.number("heartbeat_seconds", 5.0, above=0),
        env=env,
        advertise_host=t.string("advertise_host", "", empty_ok=True,
                                check=lambda v: check_host(v) if v else v),
        bind_host=t.string("bind_host", "0.0.0.0", check=check_host),
        nice=t.integer("nice", 10, minimum=0, maximum=19),
    )


def _gateway(t: _Table, worker: WorkerConfig) -> GatewayConfig:
    host, port = t.string("listen", check=parse_host_port) if "listen" in t.data else ("0.0.0.0", 8000)
    default_url = f"http://{format_host_port(_reachable_host(host), port)}"
    timeout = t.number("heartbeat_timeout_seconds", max(15.0, 3 * worker.heartbeat_seconds), above=0)
    if "heartbeat_timeout_seconds" in t.data and timeout <= worker.heartbeat_seconds:
        raise t.fail("heartbeat_timeout_seconds",
                     f"must be greater than worker.heartbeat_seconds ({worker.heartbeat_seconds:g}), got {timeout:g}")
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


def _revenue(t: _Table) -> RevenueConfig:
    def currency(value: str) -> str:
        if not re.fullmatch(r"[A-Z]{3}", value):
            raise ValueError(f'"{value}" is not a three-letter currency code such as "USD"')
        return value
    return RevenueConfig(
        operator_share=t.number("operator_share", 0.7, minimum=0, maximum=1),
        currency=t.string("currency", "USD", check=currency),
        raw_gpu_hour_price=t.number("raw_gpu_hour_price", 2.0, minimum=0, maximum=MAX_PRICE_PER_MTOK,
                                    unit="per GPU-hour"),
    )


def _exports(t: _Table) -> ExportsConfig:
    def cron(value: str) -> str:
        # Five crontab fields; APScheduler's CronTrigger checks the rest when `isense serve`
        # starts (this module stays free of third-party imports).
        if value and (len(value.split()) != 5 or not re.fullmatch(r"[0-9A-Za-z*/,\- ]+", value)):
            raise ValueError(f'{_show(value)} is not a crontab expression of five fields such as "15 0 * * *"')
        return value

    def period(value: str) -> str:
        if value != "yesterday":
            raise ValueError(f'{_show(value)}: only "yesterday" (the last closed UTC day) can be exported on a schedule')
        return value

    def fmt(value: str) -> str:
        if value not in ("csv", "jsonl"):
            raise ValueError(f'{_show(value)}: use "csv" or "jsonl"')
        return value

    return ExportsConfig(
        cron=t.string("cron", "", empty_ok=True, check=cron).strip(),
        period=t.string("period", "yesterday", check=period),
        format=t.string("format", "csv", check=fmt),
        dir=t.folder_path("dir", "/var/lib/isense/exports"),
    )


def _models(top: _Table) -> list[ModelConfig]:
    if "models" not in top.data:
        raise top.fail("models", "at least one [[models]] table is required")
    entries = top.data["models"]
    if isinstance(entries, dict):
        raise top.fail("models", "must be an array of tables: write [[models]], not [models]")
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise top.fail("models", f"must be an array of tables ([[models]]), got {_show(entries)}")
    if not entries:
        raise top.fail("models", "at least one [[models]] table is required")
    models: list[ModelConfig] = []
    for i, entry in enumerate(entries):
        model = _model(_Table(top.ctx, ("models", i), entry, _MODEL_KEYS))
        first = next((j for j, m in enumerate(models) if m.name == model.name), None)
        if first is not None:
            raise top.fail(("models", i, "name"), f"duplicate model name {_show(model.name)} (also models[{first}])")
        models.append(model)
    return models


def _model(t: _Table) -> ModelConfig:
    def served_name(value: str) -> str:
        if re.search(r"\s", value) or not value.isprintable():
            raise ValueError(f"{_show(value)} must not contain spaces or control characters")
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
    price_t = t.table("price", _PRICE_KEYS, required=True)
    price_range = dict(minimum=0, maximum=MAX_PRICE_PER_MTOK, unit="per million tokens")
    input_price = price_t.number("input_per_mtok", **price_range)
    price = Price(
        input_per_mtok=input_price,
        output_per_mtok=price_t.number("output_per_mtok", **price_range),
        cached_input_per_mtok=price_t.number("cached_input_per_mtok", input_price, **price_range),
    )
    return ModelConfig(name=name, path=path, gpus=gpus, context_length=context_length,
                       weight=weight, vllm_args=args, price=price)


# ------------------------------------------------------------------- reading the file


def _read_text(file: Path, source: str) -> str:
    hint = {"default": f" (the default; pass --config FILE or set {ENV_VAR})",
            f"${ENV_VAR}": f" (from ${ENV_VAR})"}.get(source, "")
    try:
        if file.is_dir():
            raise ConfigError(f"{file}: is a directory, not a config file{hint}")
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found{hint}") from None
    except PermissionError:
        raise ConfigError(f"{file}: cannot read config file: permission denied (running as {_user()})") from None
    except OSError as err:
        raise ConfigError(f"{file}: cannot read config file: {err.strerror or err}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"{file}:{line}: not valid UTF-8 text (byte {err.start})") from None


def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def _syntax_message(name: str, source: str, err: tomllib.TOMLDecodeError) -> str:
    text = str(err)
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", text)
    if match:
        return f"{name}:{match.group(1)}:{match.group(2)}: TOML syntax error: {text[: match.start()]}"
    text = re.sub(r"\s*\(at end of document\)$", "", text)
    last_line = source.count("\n") + (0 if source.endswith("\n") else 1)
    return f"{name}:{max(last_line, 1)}: TOML syntax error at end of file: {text}"


# ------------------------------------------------------------------ lines of the keys

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]")
_ASSIGN_RE = re.compile(rf"^\s*({_DOTTED})\s*=")


def _key_parts(dotted: str) -> list[str]:
    parts = []
    for raw in re.findall(_KEY, dotted):
        if raw.startswith('"'):
            parts.append(json.loads(raw))
        elif raw.startswith("'"):
            parts.append(raw[1:-1])
        else:
            parts.append(raw)
    return parts


class _KeyLines:
    """Maps key paths such as ("models", 1, "price") to the line they sit on.

    Best effort: follows [table] and [[array]] headers and `key =` lines, skips
    multi-line strings; keys inside an inline table are looked up on its line.
    """

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.index: dict[KeyPath, int] = {}
        self._scan()

    def _scan(self) -> None:
        prefix: KeyPath = ()
        counts: dict[KeyPath, int] = {}
        in_string = None
        for number, line in enumerate(self.lines, 1):
            if in_string:
                if line.count(in_string) % 2:
                    in_string = None
                continue
            header = _HEADER_RE.match(line)
            if header:
                prefix = self._header_path(_key_parts(header.group(2)), header.group(1) == "[[", counts)
                self.index.setdefault(prefix, number)
                continue
            assign = _ASSIGN_RE.match(line)
            if assign:
                self.index.setdefault(prefix + tuple(_key_parts(assign.group(1))), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2:
                    in_string = quote

    @staticmethod
    def _header_path(parts: list[str], is_array: bool, counts: dict[KeyPath, int]) -> KeyPath:
        path: KeyPath = ()
        for i, part in enumerate(parts):
            path += (part,)
            if is_array and i == len(parts) - 1:
                counts[path] = counts.get(path, 0) + 1
                path += (counts[path] - 1,)
            elif path in counts:
                path += (counts[path] - 1,)
        return path

    def line_of(self, path: KeyPath, value: Any = None) -> int | None:
        if path in self.index:
            return self.index[path]
        for cut in range(len(path) - 1, 0, -1):
            parent = path[:cut]
            if parent not in self.index:
                continue
            start = self.index[parent]
            child = path[cut]
            if isinstance(child, str):
                pattern = re.compile(rf"(?<![\w-]){re.escape(child)}\s*=|{re.escape(json.dumps(child))}\s*=")
                if pattern.search(self.lines[start - 1]):
                    return start
            elif isinstance(value, str):  # an array element: find its text
                needle = json.dumps(value)
                for offset, line in enumerate(self.lines[start - 1 : start + 99]):
                    if needle in line or f"'{value}'" in line:
                        return start + offset
            return start
        return None
