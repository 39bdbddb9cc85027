"""The gateway's shared secret and the per-worker credentials derived from it.

One random secret lives in `[secrets] dir`/worker.key, readable by root and the
service account only. Each worker job derives its own credentials from it and its
Slurm job id, so another cluster user (who cannot read the file) can neither
register a fake worker nor call a worker's vLLM directly.
"""

import grp
import hashlib
import hmac
import os
import pwd
import secrets as _random
from pathlib import Path

from isense_slurm.errors import ConfigError

SECRET_FILE = "worker.key"


def secret_path(secrets_dir) -> Path:
    return Path(secrets_dir) / SECRET_FILE


def load_secret(secrets_dir) -> bytes:
    path = secret_path(secrets_dir)
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        raise ConfigError(f"{path}: worker secret missing (run `isense secrets init`)") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the worker secret (permission denied)") from None
    if len(data) < 32:
        raise ConfigError(f"{path}: worker secret too short (need at least 32 bytes)")
    return data


def create_secret(secrets_dir, group_gid: int | None = None) -> Path:
    """Write a new secret unless one exists; mode 0640 (group: the service account)."""
    path = secret_path(secrets_dir)
    path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
    if path.exists():
        return path
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w") as f:
        f.write(_random.token_hex(32) + "\n")
    if group_gid is not None:
        os.chown(tmp, 0, group_gid)
        os.chown(path.parent, 0, group_gid)
    os.replace(tmp, path)
    return path


def service_gid(account: str) -> int | None:
    """The service account's group, when we may hand the secret to it (as root); else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(account).pw_gid
    except KeyError:
        try:
            return grp.getgrnam(account).gr_gid
        except KeyError:
            return None


def ensure_secret(secrets_dir, account: str) -> bytes:
    """The worker secret, created first when missing (in `account`'s group, as root)."""
    try:
        create_secret(secrets_dir, service_gid(account))
    except OSError as err:
        raise ConfigError(f"[secrets] dir {secrets_dir}: cannot create the worker secret ({err.strerror})") from None
    return load_secret(secrets_dir)


def _derive(secret: bytes, purpose: str, job_id: str) -> str:
    return hmac.new(secret, f"{purpose}:{job_id}".encode(), hashlib.sha256).hexdigest()


def worker_token(secret: bytes, job_id: str) -> str:
    """Bearer token a worker presents to the gateway to register and heartbeat."""
    return _derive(secret, "worker", str(job_id))


def vllm_api_key(secret: bytes, job_id: str) -> str:
    """API key the worker gives its vLLM; the gateway derives the same to call it."""
    return _derive(secret, "vllm", str(job_id))


def check_worker_token(secret: bytes, job_id: str, token: str | None) -> bool:
    return hmac.compare_digest(worker_token(secret, job_id), token or "")


def hook_token(secret: bytes, node: str) -> str:
    """Bearer token a node's prolog/epilog presents with events about that node."""
    return _derive(secret, "hook", str(node))


def check_hook_token(secret: bytes, node: str, token: str | None) -> bool:
    return hmac.compare_digest(hook_token(secret, node), token or "")
