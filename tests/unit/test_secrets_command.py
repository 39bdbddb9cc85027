"""`isense secrets init`: creates the worker secret once, keeps it after."""

from __future__ import annotations

from pathlib import Path

from isense_slurm.cli import main

REPO = Path(__file__).resolve().parents[2]


def config_with_secrets(tmp_path: Path) -> Path:
    text = (REPO / "dev" / "isense.dev.toml").read_text()
    path = tmp_path / "isense.toml"
    path.write_text(text.replace('dir = "/var/lib/isense-dev/secrets"', f'dir = "{tmp_path / "secrets"}"'))
    return path


def test_init_creates_once_and_keeps_the_secret(tmp_path, capsys):
    config = config_with_secrets(tmp_path)
    key = tmp_path / "secrets" / "worker.key"
    assert main(["--config", str(config), "secrets", "init"]) == 0
    assert capsys.readouterr().out.startswith(f"{key}: created")
    first = key.read_bytes()
    assert len(first.strip()) == 64 and (key.stat().st_mode & 0o777) == 0o640
    assert main(["--config", str(config), "secrets", "init"]) == 0
    assert capsys.readouterr().out == f"{key}: exists (kept)\n"
    assert key.read_bytes() == first


def test_without_action_is_a_usage_error(tmp_path, capsys):
    assert main(["--config", str(config_with_secrets(tmp_path)), "secrets"]) == 2
    assert "isense secrets init" in capsys.readouterr().err
