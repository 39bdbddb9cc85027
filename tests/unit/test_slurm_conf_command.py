"""`isense slurm-conf` end to end on recorded Slurm output: the release Slurm reports
heads the text, --slurm-version overrides it, a bad value is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

import isense_slurm.slurm as slurm_pkg
from isense_slurm.admin.slurm_conf import ASSUMED_RELEASE
from isense_slurm.cli import main
from isense_slurm.errors import SlurmError
from isense_slurm.slurm.file_backend import FileBackend

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "dev" / "isense.dev.toml")  # pools ["train"], lend partition inference
FIXTURES = REPO / "tests" / "fixtures" / "slurm"
VERSIONS = sorted(p.name for p in FIXTURES.iterdir() if (p / "squeue.json").exists())


class NoSlurm:
    """A host without Slurm commands."""

    def version(self):
        raise SlurmError("sinfo: command not found (is slurm-client installed and on PATH?)")

    def nodes(self, **_):
        raise SlurmError("scontrol: command not found (is slurm-client installed and on PATH?)")


def slurm_conf(monkeypatch, capsys, backend, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(slurm_pkg, "backend_for", lambda slurm_config, timeout=30.0: backend)
    code = main(["--config", CONFIG, "slurm-conf", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("version", VERSIONS)
def test_the_release_slurm_reports_heads_the_text(version, monkeypatch, capsys):
    backend = FileBackend(FIXTURES / version)
    code, out, _ = slurm_conf(monkeypatch, capsys, backend)
    assert code == 0
    release = backend.version()
    assert release.startswith(version + ".")
    assert f"# For Slurm {release} (as Slurm here reports it; for another: --slurm-version X.Y)." in out
    assert "PartitionName=inference Nodes=n[1-4] PriorityTier=1" in out
    assert ("RunInJob" in out) == (version >= "24.05")


def test_slurm_version_overrides_what_slurm_reports(monkeypatch, capsys):
    code, out, _ = slurm_conf(monkeypatch, capsys, FileBackend(FIXTURES / "22.05"), "--slurm-version", "26.05")
    assert code == 0
    assert "# For Slurm 26.05 (--slurm-version; Slurm here is 22.05.8)." in out.splitlines()
    assert "slurmctld serves OpenMetrics" in out


def test_without_slurm_the_text_says_what_it_assumes(monkeypatch, capsys):
    code, out, _ = slurm_conf(monkeypatch, capsys, NoSlurm())
    assert code == 0
    assert f"# For Slurm {ASSUMED_RELEASE}, assumed: Slurm did not answer here" in out
    assert "Nodes=<the nodes of train>" in out
    code, out, _ = slurm_conf(monkeypatch, capsys, NoSlurm(), "--slurm-version", "23.02")
    assert "# For Slurm 23.02 (--slurm-version)." in out.splitlines()


@pytest.mark.parametrize(
    "bad, says",
    [
        ("24", "write it as Slurm does, e.g. 24.11 or 24.11.5"),
        ("24.11.x", "write it as Slurm does"),
        ("v24.11", "write it as Slurm does"),
        ("21.08", "isense supports Slurm 22.05 and later"),
    ],
)
def test_a_bad_slurm_version_is_one_line_and_exit_2(bad, says, monkeypatch, capsys):
    code, out, err = slurm_conf(monkeypatch, capsys, NoSlurm(), "--slurm-version", bad)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and says in err and err.startswith("isense: --slurm-version")
