"""Config validation through the real `isense config` command, plus the pure parts.

Every malformed config must give exactly one stderr line that names the file, the line
and the dotted key, exit 2 and print no traceback.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from isense_slurm.config import (
    ConfigError,
    check_http_url,
    load_config,
    parse_config,
    parse_host_port,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "examples" / "isense.toml"
DEV = REPO / "dev" / "isense.dev.toml"
ISENSE = Path(sys.executable).parent / "isense"
MINIMAL = """\
[slurm]
lend_partition = "inference"
service_account = "isense"
pools = ["train"]

[[models]]
name = "m"
path = "/models/m"
context_length = 1024
price = { input_per_mtok = 0.2, output_per_mtok = 0.8 }
"""


def isense(*args, env=None, user=None):
    environ = {k: v for k, v in os.environ.items() if k != "ISENSE_CONFIG"}
    environ.update(env or {})
    return subprocess.run([str(ISENSE), *args], capture_output=True, text=True, env=environ, user=user, timeout=60)


def edited(tmp_path: Path, old_line: str, new_text: str, source: Path = EXAMPLE) -> tuple[Path, int]:
    """A copy of `source` with the one line equal to `old_line` replaced; returns (file, line)."""
    lines = source.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.strip() == old_line]
    assert len(hits) == 1, f"{old_line!r} is not one line of {source}"
    lines[hits[0]] = new_text
    file = tmp_path / "isense.toml"
    file.write_text("\n".join(lines) + "\n")
    return file, hits[0] + 1


def assert_one_line_error(result, prefix: str, *fragments: str) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"isense: {prefix}"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------- valid files


@pytest.mark.parametrize("config", [EXAMPLE, DEV], ids=["example", "dev"])
def test_shipped_configs_check_ok(config):
    result = isense("config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"config OK: {config}"
    assert result.stderr == ""


def test_printed_effective_config_is_toml_that_loads_to_the_same_config(tmp_path):
    result = isense("config", "check", str(EXAMPLE))
    printed = result.stdout.split("\n", 1)[1]
    again = tmp_path / "effective.toml"
    again.write_text(printed)
    assert dataclasses.replace(load_config(again), path=EXAMPLE) == load_config(EXAMPLE)


def test_json_output_has_defaults_filled(tmp_path):
    file = tmp_path / "min.toml"
    file.write_text(MINIMAL)
    result = isense("config", "check", "--json", str(file))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == str(file)
    cfg = data["config"]
    assert cfg["slurm"]["max_lend_share"] == 0.5
    assert cfg["slurm"]["availability"] == []
    assert cfg["gateway"]["listen"] == "0.0.0.0:8000"
    assert cfg["gateway"]["advertise_url"] == f"http://{socket.gethostname()}:8000"
    assert cfg["worker"]["advertise_host"] == ""
    assert cfg["worker"]["bind_host"] == "0.0.0.0"
    assert cfg["models"][0]["gpus"] == 1
    assert cfg["models"][0]["price"]["cached_input_per_mtok"] == 0.2


def test_file_argument_overrides_flag_and_env(tmp_path):
    missing = tmp_path / "missing.toml"
    result = isense("--config", str(missing), "config", "check", str(DEV), env={"ISENSE_CONFIG": str(missing)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"config OK: {DEV}")


def test_env_var_is_used_without_flag():
    result = isense("config", "check", env={"ISENSE_CONFIG": str(DEV)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"config OK: {DEV}")


@pytest.mark.parametrize(
    "flag, env, why",
    [
        ([], {}, "the default"),
        ([], {"ISENSE_CONFIG": str(DEV)}, "from $ISENSE_CONFIG"),
        (["--config", str(EXAMPLE)], {"ISENSE_CONFIG": str(DEV)}, "given by --config"),
    ],
)
def test_config_path_says_which_file_and_why(flag, env, why):
    result = isense(*flag, "config", "path", env=env)
    assert result.returncode == 0, result.stderr
    expected = flag[1] if flag else env.get("ISENSE_CONFIG", "/etc/isense/isense.toml")
    assert result.stdout.splitlines()[0] == expected
    assert why in result.stdout


# ------------------------------------------------------------------ malformed files

MODEL2_PRICE = "price = { input_per_mtok = 0.60, output_per_mtok = 1.20, cached_input_per_mtok = 0.30 }"

CASES = [
    # (line as in the example, replacement, dotted key, words of the message)
    ("max_lend_share = 0.75", "max_lend_share = = 0.75", None, "TOML syntax error"),
    ("max_lend_share = 0.75", "max_lend_shar = 0.75", "slurm.max_lend_shar", 'did you mean "max_lend_share"'),
    ("[gateway]", "[gatway]", "gatway", 'did you mean "gateway"'),
    ("min_idle_seconds = 60", "min_idle_seconds = true", "slurm.min_idle_seconds", "integer", "boolean"),
    ("min_idle_seconds = 60", "min_idle_seconds = 60.5", "slurm.min_idle_seconds", "integer"),
    ("tick_seconds = 5", 'tick_seconds = "5"', "slurm.tick_seconds", "number", "string"),
    ("gpus = 4", "gpus = true", "models[1].gpus", "integer", "boolean"),
    ("max_lend_share = 0.75", "max_lend_share = 1.5", "slurm.max_lend_share", "between 0 and 1"),
    ("operator_share = 0.70", "operator_share = -0.1", "revenue.operator_share", "between 0 and 1"),
    (MODEL2_PRICE, MODEL2_PRICE.replace("1.20", "-1.20"), "models[1].price.output_per_mtok", "between 0 and 1000"),
    (MODEL2_PRICE, MODEL2_PRICE.replace("1.20", "5000"), "models[1].price.output_per_mtok", "1000"),
    (MODEL2_PRICE, MODEL2_PRICE.replace("0.60,", "0.60, extra = 1,"), "models[1].price.extra", "unknown key"),
    (
        'availability = ["weekdays 20:00-08:00", "weekends 00:00-24:00"]',
        'availability = ["weekdays 20:00-08:00", "weekends 00:00-25:00"]',
        "slurm.availability[1]",
        "bad end time",
    ),
    (
        'availability = ["weekdays 20:00-08:00", "weekends 00:00-24:00"]',
        'availability = ["weekday 20:00-08:00"]',
        "slurm.availability[0]",
        'did you mean "weekdays"',
    ),
    ('listen = "0.0.0.0:8000"', 'listen = "0.0.0.0:80000"', "gateway.listen", "1..65535"),
    ('listen = "0.0.0.0:8000"', 'listen = "::1:8000"', "gateway.listen", "brackets"),
    ('listen = "0.0.0.0:8000"', 'listen = "0.0.0.0"', "gateway.listen", "no port"),
    ('listen = "0.0.0.0:8000"', 'listen = "300.1.1.1:80"', "gateway.listen", "IPv4"),
    ('name = "qwen2.5-72b-instruct"', 'name = "llama-3.1-8b-instruct"', "models[1].name", "duplicate"),
    ("gpus = 4", "gpus = 0", "models[1].gpus", "at least 1"),
    ("drain_seconds = 3", "drain_seconds = 0", "slurm.drain_seconds", "greater than 0"),
    (
        'advertise_url = "http://slurm-head:8000"',
        'advertise_url = "slurm-head:8000"',
        "gateway.advertise_url",
        "http://",
    ),
    ('service_account = "isense"', "", "slurm.service_account", "required"),
    (
        'env = { VLLM_NO_USAGE_STATS = "1" }',
        "env = { VLLM_NO_USAGE_STATS = 1 }",
        "worker.env.VLLM_NO_USAGE_STATS",
        "string",
    ),
    (
        "heartbeat_timeout_seconds = 15",
        "heartbeat_timeout_seconds = 5",
        "gateway.heartbeat_timeout_seconds",
        "worker.heartbeat_seconds",
    ),
    (
        'vllm_args = ["--gpu-memory-utilization", "0.90"]',
        'vllm_args = ["--port", "9000"]',
        "models[0].vllm_args[0]",
        "--port",
    ),
    ("weight = 0.5", "weight = nan", "models[1].weight", "finite"),
    ('currency = "USD"', 'currency = "dollars"', "revenue.currency", "currency code"),
    (
        'submit_wake = "/var/spool/isense/submit.wake"',
        'submit_wake = "spool/submit.wake"',
        "slurm.submit_wake",
        "absolute path",
    ),
    ('submit_wake = "/var/spool/isense/submit.wake"', "submit_wake = 1", "slurm.submit_wake", "string"),
    ("nice = 10", "nice = 20", "worker.nice", "between 0 and 19"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[2] or 'syntax'}:{c[3]}" for c in CASES])
def test_malformed_config_gives_one_line_naming_key_and_line(tmp_path, case):
    old, new, key, *words = case
    file, line = edited(tmp_path, old, new)
    if new == "":  # a missing key is reported at its table's header
        line = EXAMPLE.read_text().splitlines().index("[slurm]") + 1
    prefix = f"{file}:{line}:" + (f" {key}: " if key else "")
    assert_one_line_error(isense("config", "check", str(file)), prefix, *words)


def test_missing_models_is_an_error(tmp_path):
    file = tmp_path / "nomodels.toml"
    file.write_text(MINIMAL.split("[[models]]")[0])
    assert_one_line_error(isense("config", "check", str(file)), f"{file}: models: ", "[[models]]")


def test_models_as_a_plain_table_is_an_error(tmp_path):
    file = tmp_path / "plain.toml"
    file.write_text(MINIMAL.replace("[[models]]", "[models]"))
    assert_one_line_error(isense("config", "check", str(file)), f"{file}:6: models: ", "[[models]]")


def test_dev_config_errors_use_its_own_lines(tmp_path):
    file, line = edited(tmp_path, '"--max-model-len", "512",', '"--host", "0.0.0.0",', source=DEV)
    assert_one_line_error(isense("config", "check", str(file)), f"{file}:{line}: models[0].vllm_args[7]: ", "--host")


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.toml"
    assert_one_line_error(isense("config", "check", str(missing)), f"{missing}: ", "not found")


def test_missing_file_from_env_says_so(tmp_path):
    missing = tmp_path / "nope.toml"
    result = isense("config", "check", env={"ISENSE_CONFIG": str(missing)})
    assert_one_line_error(result, f"{missing}: ", "not found", "$ISENSE_CONFIG")


def test_directory_given(tmp_path):
    assert_one_line_error(isense("config", "check", str(tmp_path)), f"{tmp_path}: ", "directory")


def test_unreadable_file(tmp_path):
    file = tmp_path / "secret.toml"
    file.write_text(MINIMAL)
    file.chmod(0)
    tmp_path.chmod(0o755)
    # root reads anything: check as the unprivileged `nobody` instead.
    user = "nobody" if os.geteuid() == 0 else None
    result = isense("config", "check", str(file), user=user)
    assert_one_line_error(result, f"{file}: ", "permission denied")


def test_not_utf8(tmp_path):
    file = tmp_path / "latin1.toml"
    file.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    assert_one_line_error(isense("config", "check", str(file)), f"{file}:11: ", "UTF-8")


def test_syntax_error_at_end_of_file_names_the_last_line(tmp_path):
    file = tmp_path / "cut.toml"
    file.write_text("[slurm]\npools = [")
    assert_one_line_error(isense("config", "check", str(file)), f"{file}:2: ", "TOML syntax error")


# ------------------------------------------------------------- the API, in process


def test_api_shape_and_defaults():
    cfg = parse_config(MINIMAL, "/etc/isense/isense.toml")
    assert cfg.path == Path("/etc/isense/isense.toml")
    assert cfg.slurm.job_dir == Path("/var/lib/isense/jobs")
    assert cfg.slurm.min_idle_seconds == 60 and cfg.slurm.max_job_minutes == 240
    assert cfg.slurm.tick_seconds == 5.0 and cfg.slurm.drain_seconds == 10.0
    assert cfg.slurm.submit_wake is None  # no job_submit hook: Slurm reclaims alone
    assert cfg.worker.nice == 10
    assert cfg.gateway.max_body_bytes == 1048576 and cfg.gateway.retry_after_seconds == 5
    assert cfg.gateway.heartbeat_timeout_seconds == 15.0
    assert cfg.worker.vllm_executable == "vllm" and cfg.worker.env == {}
    assert cfg.worker.startup_timeout_seconds == 600.0 and cfg.worker.heartbeat_seconds == 5.0
    assert cfg.ledger.path == Path("/var/lib/isense/ledger.db")
    assert cfg.secrets.dir == Path("/etc/isense/secrets")
    assert (cfg.revenue.operator_share, cfg.revenue.currency, cfg.revenue.raw_gpu_hour_price) == (0.7, "USD", 2.0)
    model = cfg.model("m")
    assert model is cfg.models[0]
    assert (model.gpus, model.weight, model.vllm_args) == (1, 1.0, [])
    assert cfg.model("other") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.slurm.max_lend_share = 1.0  # type: ignore[misc]


def test_relative_paths_are_taken_from_the_config_folder(tmp_path):
    text = MINIMAL.replace('pools = ["train"]', 'pools = ["train"]\njob_dir = "jobs"') + '[ledger]\npath = "l.db"\n'
    cfg = parse_config(text, tmp_path / "isense.toml")
    assert cfg.slurm.job_dir == tmp_path / "jobs"
    assert cfg.ledger.path == tmp_path / "l.db"


def test_dev_config_values():
    cfg = load_config(DEV)
    assert cfg.slurm.lend_partition == "inference" and cfg.slurm.pools == ["train"]
    assert cfg.slurm.availability == [] and cfg.slurm.max_lend_share == 1.0
    assert cfg.gateway.listen_host == "127.0.0.1" and cfg.gateway.listen_port == 8000
    assert cfg.worker.advertise_host == "127.0.0.1"
    assert cfg.slurm.submit_wake == Path("/var/lib/isense-dev/slurmctld/submit.wake")  # dev/cluster's lua
    assert cfg.worker.env == {
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # two vLLM processes, not three
    }
    tiny = cfg.model("tiny-llama")
    assert tiny.gpus == 4 and tiny.context_length == 512
    assert tiny.vllm_args[tiny.vllm_args.index("--kv-cache-memory-bytes") + 1] == "64M"
    assert (tiny.price.input_per_mtok, tiny.price.output_per_mtok, tiny.price.cached_input_per_mtok) == (0.1, 0.4, 0.05)


def test_example_windows_are_in_local_wall_time():
    from datetime import datetime

    cfg = load_config(EXAMPLE)
    assert cfg.slurm.available_at(datetime(2024, 1, 2, 23, 0))  # Tuesday night
    assert not cfg.slurm.available_at(datetime(2024, 1, 2, 12, 0))  # Tuesday noon
    assert cfg.slurm.available_at(datetime(2024, 1, 6, 12, 0))  # Saturday


def test_errors_are_config_errors_with_exit_2():
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL.replace("context_length = 1024", "context_length = 0"), "x.toml")
    assert err.value.exit_code == 2
    assert str(err.value) == "x.toml:9: models[0].context_length: must be at least 1, got 0"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.0.0.0:8000", ("0.0.0.0", 8000)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("gateway.example.org:65535", ("gateway.example.org", 65535)),
        ("[::]:8000", ("::", 8000)),
        ("[::1]:443", ("::1", 443)),
        ("[fe80::1]:80", ("fe80::1", 80)),
    ],
)
def test_good_listen_addresses(text, expected):
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "8000",
        ":8000",
        "0.0.0.0:",
        "0.0.0.0:0",
        "0.0.0.0:65536",
        "0.0.0.0:http",
        "::1:8000",
        "[::1]",
        "[::1]8000",
        "[localhost]:80",
        "[::zz]:80",
        "999.0.0.1:80",
        "bad host:80",
        "-bad:80",
        "host:-1",
    ],
)
def test_bad_listen_addresses(text):
    with pytest.raises(ValueError):
        parse_host_port(text)


@pytest.mark.parametrize(
    "url, ok",
    [
        ("http://head:8000", True),
        ("https://gw.example.org/", True),
        ("http://[::1]:8000", True),
        ("ftp://head", False),
        ("head:8000", False),
        ("http://", False),
        ("http://head:99999", False),
        ("http://head:8000?x=1", False),
    ],
)
def test_advertise_urls(url, ok):
    if ok:
        assert check_http_url(url).startswith("http")
    else:
        with pytest.raises(ValueError):
            check_http_url(url)


def test_example_is_plain_toml_with_every_known_key():
    """The shipped example documents each key the loader knows (so the docs cannot lag)."""
    from isense_slurm.config import sections as module

    doc = tomllib.loads(EXAMPLE.read_text())
    assert sorted(doc["slurm"]) == sorted(module.SLURM_KEYS)
    assert sorted(doc["gateway"]) == sorted(module.GATEWAY_KEYS)
    assert sorted(doc["worker"]) == sorted(module.WORKER_KEYS)
    assert sorted(doc["models"][0]) == sorted(module.MODEL_KEYS)


# --------------------------------------------------------------------- import weight

HEAVY = ["aiohttp", "torch", "vllm", "transformers", "pynvml", "numpy", "openai"]


def test_help_imports_nothing_heavy():
    code = (
        "import sys, json\n"
        "from isense_slurm import cli\n"
        "cli.build_parser().format_help()\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert isense("--help").returncode == 0


def test_config_module_uses_only_the_standard_library():
    code = (
        "import sys, json\n"
        "before = set(sys.modules)\n"
        "import isense_slurm.config\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(json.dumps(sorted(m for m in new if m not in sys.stdlib_module_names and m != 'isense_slurm')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
