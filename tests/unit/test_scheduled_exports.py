"""[exports] cron in `isense serve`: the same run_export guarantees on a schedule."""

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from earnings_world import make_world, request, table_rows, write_requests
from isense_slurm.config import ExportsConfig, load_config, parse_config
from isense_slurm.controller.scheduled_exports import check_cron, schedule_exports
from isense_slurm.errors import ConfigError


class CronRecorder:
    """Stands in for the Agent's add_cron (the APScheduler part is the Agent's)."""

    def __init__(self):
        self.jobs = []

    def add_cron(self, expr, func, name):
        self.jobs.append((expr, func, name))


def test_scheduled_export_writes_yesterday_once(tmp_path):
    config, ledger = make_world(tmp_path)
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    write_requests(config, [request(f"r{i}", midnight - 3600 * (i + 1)) for i in range(5)])
    out = tmp_path / "exports"
    out.mkdir()
    cfg = replace(load_config(str(config)), exports=ExportsConfig("15 0 * * *", "yesterday", "jsonl", out))

    agent = CronRecorder()
    schedule_exports(cfg)(agent)
    [(expr, run, name)] = agent.jobs
    assert expr == "15 0 * * *" and name == "isense-export"
    run()
    files = sorted(p.name for p in out.iterdir())
    assert len(files) == 2 and files[0].endswith(".jsonl") and files[1].endswith(".jsonl.sha256")
    first = (out / files[0]).read_bytes()
    assert len(first.splitlines()) == 5
    run()  # the next firing for the same period: nothing new, no second entry
    assert (out / files[0]).read_bytes() == first
    assert len(table_rows(ledger, "exports")) == 1


def test_no_cron_means_no_exports(tmp_path):
    config, _ = make_world(tmp_path)
    assert schedule_exports(load_config(str(config))) is None


def test_cron_is_checked_fully_at_start(tmp_path):
    config, _ = make_world(tmp_path)
    cfg = replace(load_config(str(config)), exports=ExportsConfig("61 * * * *", "yesterday", "csv", tmp_path))
    with pytest.raises(ConfigError, match="exports.cron"):
        check_cron(cfg)


@pytest.mark.parametrize(
    "line, message",
    [
        ('cron = "daily"', "exports.cron"),
        ('period = "2025-01-01"', "exports.period"),
        ('format = "xlsx"', "exports.format"),
        ('when = "x"', "exports.when: unknown key"),
    ],
)
def test_bad_exports_keys_name_the_key(tmp_path, line, message):
    text = (
        '[slurm]\nlend_partition = "i"\nservice_account = "isense"\npools = ["p"]\n'
        f"[exports]\n{line}\n"
        '[[models]]\nname = "m"\npath = "/m"\ncontext_length = 8\n'
        "price = { input_per_mtok = 1, output_per_mtok = 1 }\n"
    )
    with pytest.raises(ConfigError, match=message):
        parse_config(text, tmp_path / "c.toml")


def test_config_check_finds_a_bad_cron_as_serve_would(tmp_path, capsys):
    """The admin guide: exit 2 from `isense serve` is a config error that `isense config
    check` names; so config check parses [exports] cron in full too."""
    from isense_slurm.cli import main

    config, _ = make_world(tmp_path)
    config.write_text(config.read_text() + '\n[exports]\ncron = "61 0 * * *"\ndir = "/tmp"\n')
    assert main(["config", "check", str(config)]) == 2
    assert "exports.cron" in capsys.readouterr().err
