"""CliBackend picks its node source by what Slurm answers, not by its version number:
`scontrol show node --json` where it exists (23.02+), else `sinfo --json` (22.05).

Stand-in commands replay the recorded fixtures of tests/fixtures/slurm/<version>/.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from isense_slurm.errors import SlurmError
from isense_slurm.slurm import CliBackend
from isense_slurm.slurm.parse_json import nodes_from_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "slurm"
# What 22.05.8's scontrol prints for `scontrol show node --json` (exit 1), controller up or not.
NO_JSON_22_05 = "scontrol: unrecognized option '--json'\nTry \"scontrol --help\" for more information\n"


def fake_slurm(bin_dir: Path, version: str, *, scontrol_stderr: str | None = None) -> Path:
    """scontrol and sinfo that print VERSION's fixtures and log each call; the log's path."""
    log = bin_dir / "calls.log"
    folder = FIXTURES / version
    scontrol_json = folder / "scontrol-node.json"
    if scontrol_stderr is None and not scontrol_json.exists():
        scontrol_stderr = NO_JSON_22_05
    if scontrol_stderr is not None:
        (bin_dir / "stderr.txt").write_text(scontrol_stderr)
        scontrol = f'cat "{bin_dir}/stderr.txt" >&2; exit 1'
    else:
        scontrol = f'cat "{scontrol_json}"'
    for name, body in (("scontrol", scontrol), ("sinfo", f'cat "{folder / "sinfo.json"}"')):
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{body}\n')
        path.chmod(0o755)
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("version", ["22.05", "24.11", "26.05"])
def test_nodes_come_from_the_first_source_that_answers(version, tmp_path):
    log = fake_slurm(tmp_path, version)
    slurm = CliBackend(bin_dir=str(tmp_path))
    nodes = slurm.nodes()
    has_scontrol_json = (FIXTURES / version / "scontrol-node.json").exists()
    source = "scontrol-node.json" if has_scontrol_json else "sinfo.json"
    expected = nodes_from_json(json.loads((FIXTURES / version / source).read_text()))
    assert [n.name for n in nodes] == [n.name for n in expected] == ["n1", "n2", "n3", "n4"]
    assert nodes == expected
    first = ["scontrol show node --json"] if has_scontrol_json else ["scontrol show node --json", "sinfo --json"]
    assert calls(log) == first
    # What answered is remembered: a second read asks that source alone.
    assert [n.name for n in slurm.nodes(partition="inference")] == ["n1", "n2", "n3", "n4"]
    assert calls(log) == first + first[-1:]


def test_a_real_scontrol_error_is_not_taken_for_a_missing_option(tmp_path):
    log = fake_slurm(
        tmp_path, "26.05", scontrol_stderr="scontrol: error: Unable to contact slurm controller (connect failure)\n"
    )
    with pytest.raises(SlurmError, match=r"^scontrol: Slurm controller is not reachable"):
        CliBackend(bin_dir=str(tmp_path)).nodes()
    assert calls(log) == ["scontrol show node --json"]
