"""The one isense config file (TOML), read and validated into frozen dataclasses.

Every error is one line, `FILE:LINE: dotted.key: what is wrong`, raised as ConfigError
(exit 2). Rooms: schema (the dataclasses), values (hosts, host:port, URLs), validate
(typed table reads) and key_lines (the line of a key), sections (each [table] built),
load (finding and reading the file), dump (the effective config as a dict).

Stdlib only: `isense config check` must run on a login node with nothing else.
This package re-exports the public names, so `from isense_slurm.config import X` works.
"""

from isense_slurm.availability import Window, WindowError
from isense_slurm.config.dump import config_to_dict
from isense_slurm.config.load import DEFAULT_PATH, ENV_VAR, load_config, parse_config, resolve_config_path
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
from isense_slurm.config.values import check_host, check_http_url, format_host_port, parse_host_port
from isense_slurm.errors import ConfigError

__all__ = [
    "DEFAULT_PATH",
    "ENV_VAR",
    "MAX_PRICE_PER_MTOK",
    "SLURM_BACKENDS",
    "WORKER_OWNED_VLLM_FLAGS",
    "Config",
    "ConfigError",
    "ExportsConfig",
    "GatewayConfig",
    "LedgerConfig",
    "ModelConfig",
    "Price",
    "RevenueConfig",
    "SecretsConfig",
    "SlurmConfig",
    "Window",
    "WindowError",
    "WorkerConfig",
    "check_host",
    "check_http_url",
    "config_to_dict",
    "format_host_port",
    "load_config",
    "parse_config",
    "parse_host_port",
    "resolve_config_path",
]
