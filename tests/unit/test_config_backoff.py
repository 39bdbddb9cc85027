"""[slurm] backoff_after_failures / backoff_seconds / backoff_max_seconds: defaults, the
example's values, and one-line errors naming the key (exit 2 through `isense config check`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from isense_slurm.config import ConfigError, load_config, parse_config
from isense_slurm.planner import Policy

REPO = Path(__file__).resolve().parents[2]
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


def test_defaults_and_the_policy_takes_them():
    s = parse_config(MINIMAL.format(extra=""), "x.toml").slurm
    assert (s.backoff_after_failures, s.backoff_seconds, s.backoff_max_seconds) == (3, 60.0, 1800.0)
    cfg = load_config(REPO / "docs" / "examples" / "isense.toml")
    pol = Policy.from_config(cfg)
    assert (pol.backoff_after_failures, pol.backoff_seconds, pol.backoff_max_seconds) == (3, 60.0, 1800.0)
    big = parse_config(MINIMAL.format(extra="backoff_seconds = 3600\n"), "x.toml").slurm
    assert big.backoff_max_seconds == 3600.0  # the default cap never undercuts the first back-off


@pytest.mark.parametrize(
    "extra, message",
    [
        ("backoff_after_failures = 0", "x.toml:5: slurm.backoff_after_failures: must be at least 1, got 0"),
        (
            "backoff_after_failures = 2.5",
            "x.toml:5: slurm.backoff_after_failures: must be an integer (no decimal point), got 2.5 (a float)",
        ),
        ("backoff_seconds = 0", "x.toml:5: slurm.backoff_seconds: must be greater than 0, got 0"),
        ('backoff_seconds = "1m"', 'x.toml:5: slurm.backoff_seconds: must be a number, got "1m" (a string)'),
        (
            "backoff_seconds = 120\nbackoff_max_seconds = 60",
            "x.toml:6: slurm.backoff_max_seconds: must be at least backoff_seconds (120), got 60",
        ),
        ("backof_seconds = 60", 'x.toml:5: slurm.backof_seconds: unknown key; did you mean "backoff_seconds"?'),
    ],
)
def test_bad_values_name_the_key(extra, message):
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL.format(extra=extra + "\n"), "x.toml")
    assert str(err.value) == message


def test_config_check_prints_one_line_and_exits_2(tmp_path):
    file = tmp_path / "isense.toml"
    file.write_text(MINIMAL.format(extra="backoff_max_seconds = -1\n"))
    proc = subprocess.run([str(ISENSE), "config", "check", str(file)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"isense: {file}:5: slurm.backoff_max_seconds: must be greater than 0, got -1"
    ]
