"""[slurm] backend = "cli" | "pyslurm": default, validation with one line naming the key,
the effective-config dump, and `isense config check` saying plainly when the configured
backend cannot load here (no pyslurm for Slurm 26.05; pyslurm not importable)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from isense_slurm.config import ConfigError, config_to_dict, parse_config

ISENSE = Path(sys.executable).parent / "isense"
MINIMAL = """\
[slurm]
lend_partition = "inference"
service_account = "isense"
pools = ["train"]
{extra}
[[models]]
name = "m"
path = "/models/m"
context_length = 1024
price = {{ input_per_mtok = 0.2, output_per_mtok = 0.8 }}
"""


def test_default_is_the_commands_and_pyslurm_is_accepted():
    assert parse_config(MINIMAL.format(extra=""), "x.toml").slurm.backend == "cli"
    cfg = parse_config(MINIMAL.format(extra='backend = "pyslurm"\n'), "x.toml")
    assert cfg.slurm.backend == "pyslurm"
    assert config_to_dict(cfg)["slurm"]["backend"] == "pyslurm"


@pytest.mark.parametrize(
    "value, words",
    [
        ('"slurmrestd"', ['must be one of "cli", "pyslurm"', '"slurmrestd"']),
        ('"PySlurm"', ["must be one of"]),
        ('""', ["must not be empty"]),
        ("1", ["must be a string"]),
    ],
)
def test_bad_backend_is_one_line_naming_the_key(value, words):
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL.format(extra=f"backend = {value}\n"), "/etc/isense/isense.toml")
    message = str(err.value)
    assert message.startswith("/etc/isense/isense.toml:5: slurm.backend: "), message
    assert "\n" not in message
    for word in words:
        assert word in message


def _write(tmp_path: Path, backend: str) -> Path:
    file = tmp_path / "isense.toml"
    file.write_text(MINIMAL.format(extra=f'backend = "{backend}"\n'))
    return file


def _fake_slurm(tmp_path: Path, release: str, *, importable: bool) -> dict[str, str]:
    """An environment whose `sinfo --version` says `release` and whose pyslurm is absent
    (an import that fails) or a stub claiming to be built for 22.05."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sinfo = bin_dir / "sinfo"
    sinfo.write_text(f"#!/bin/sh\necho 'slurm {release}'\n")
    sinfo.chmod(0o755)
    lib = tmp_path / "lib"
    (lib / "pyslurm").mkdir(parents=True)
    body = '__version__ = "22.5.3"\n' if importable else 'raise ImportError("No module named pyslurm")\n'
    (lib / "pyslurm" / "__init__.py").write_text(body)
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=test\n")
    env = {k: v for k, v in os.environ.items() if k != "ISENSE_CONFIG"}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '')}", PYTHONPATH=str(lib), SLURM_CONF=str(conf))
    return env


def _check(file: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ISENSE), "config", "check", str(file)], capture_output=True, text=True, env=env, timeout=60
    )


def test_check_says_no_pyslurm_exists_for_slurm_26_05(tmp_path):
    proc = _check(_write(tmp_path, "pyslurm"), _fake_slurm(tmp_path, "26.05.5", importable=True))
    assert proc.returncode == 1, proc.stderr
    assert "config OK" in proc.stdout and 'backend = "pyslurm"' in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "no pyslurm exists for Slurm 26.05.5" in lines[0] and 'backend = "cli"' in lines[0]


def test_check_says_how_to_install_pyslurm_when_it_does_not_import(tmp_path):
    proc = _check(_write(tmp_path, "pyslurm"), _fake_slurm(tmp_path, "22.05.8", importable=False))
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith('isense: [slurm] backend = "pyslurm" (Slurm 22.05.8): pyslurm is not importable')
    assert "dev/pyslurm-setup" in line


def test_check_refuses_a_pyslurm_built_for_another_slurm(tmp_path):
    proc = _check(_write(tmp_path, "pyslurm"), _fake_slurm(tmp_path, "24.11.5", importable=True))
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "pyslurm 22.5.3 is for another Slurm" in line and "(Slurm 24.11.5)" in line


def test_check_passes_a_pyslurm_that_matches_and_ignores_the_cli_backend(tmp_path):
    env = _fake_slurm(tmp_path, "22.05.8", importable=True)
    assert _check(_write(tmp_path, "pyslurm"), env).returncode == 0
    (tmp_path / "bin" / "sinfo").unlink()  # the commands' backend asks nothing of Slurm here
    proc = _check(_write(tmp_path, "cli"), env)
    assert proc.returncode == 0 and proc.stderr == ""
