"""Finding and reading the config file: --config > $ISENSE_CONFIG > /etc/isense/isense.toml."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from isense_slurm.config.schema import Config
from isense_slurm.config.sections import build
from isense_slurm.config.validate import Context
from isense_slurm.errors import ConfigError

DEFAULT_PATH = "/etc/isense/isense.toml"
ENV_VAR = "ISENSE_CONFIG"


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
    ctx = Context(str(path), text, file.absolute().parent)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(_syntax_message(str(path), text, err)) from None
    return build(ctx, doc, file.absolute())


def _read_text(file: Path, source: str) -> str:
    hint = {
        "default": f" (the default; pass --config FILE or set {ENV_VAR})",
        f"${ENV_VAR}": f" (from ${ENV_VAR})",
    }.get(source, "")
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
        import pwd  # Unix only: elsewhere the uid is shown

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
