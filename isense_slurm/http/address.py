"""Where the server listens: --listen HOST:PORT when given, else [gateway] listen."""

from isense_slurm.config import parse_host_port
from isense_slurm.errors import UsageError


def listen_address(cfg, flag: str | None) -> tuple[str, int]:
    """(host, port) from the --listen flag, or the config's [gateway] listen."""
    if not flag:
        return cfg.gateway.listen_host, cfg.gateway.listen_port
    try:
        return parse_host_port(flag)
    except ValueError as err:
        raise UsageError(f"--listen: {err}") from None
