"""vLLM's command line and environment for a worker (pure; no vLLM needed)."""

import pytest

from isense_slurm.config import ModelConfig, Price
from isense_slurm.errors import ConfigError
from isense_slurm.secrets import vllm_api_key
from isense_slurm.worker.identity import identify
from isense_slurm.worker.vllm_process import build_command, build_env, local_address, niced

SECRET = b"s" * 64


def model(vllm_args=(), gpus=2, context_length=4096):
    return ModelConfig(
        name="m1",
        path="/models/m1",
        gpus=gpus,
        context_length=context_length,
        weight=1.0,
        vllm_args=list(vllm_args),
        price=Price(0.1, 0.4, 0.05),
    )


def flag_value(cmd, flag):
    i = cmd.index(flag)
    return cmd[i + 1]


def test_command_has_model_name_host_port_and_forced_usage():
    cmd = build_command("/venv/bin/vllm", model(), "0.0.0.0", 8123)
    assert cmd[:3] == ["/venv/bin/vllm", "serve", "/models/m1"]
    assert flag_value(cmd, "--served-model-name") == "m1"
    assert flag_value(cmd, "--host") == "0.0.0.0"
    assert flag_value(cmd, "--port") == "8123"
    assert flag_value(cmd, "--max-model-len") == "4096"
    assert "--enable-force-include-usage" in cmd  # usage in every answer, streams too
    assert "--enable-server-load-tracking" in cmd  # GET /load, read by the drain


def test_tensor_parallel_defaults_to_model_gpus():
    cmd = build_command("vllm", model(gpus=4), "0.0.0.0", 1)
    assert flag_value(cmd, "--tensor-parallel-size") == "4"


@pytest.mark.parametrize(
    "args",
    [
        ["-tp", "1"],
        ["--tensor-parallel-size", "1"],
        ["--tensor-parallel-size=1"],
        ["--tensor_parallel_size", "1"],
    ],
)
def test_tensor_parallel_from_vllm_args_is_not_duplicated(args):
    cmd = build_command("vllm", model(args, gpus=4), "0.0.0.0", 1)
    assert cmd[-len(args) :] == args
    spelled = [a for a in cmd if a.split("=")[0] in ("-tp", "--tensor-parallel-size", "--tensor_parallel_size")]
    assert len(spelled) == 1


def test_max_model_len_from_vllm_args_is_not_duplicated():
    cmd = build_command("vllm", model(["--max-model-len", "512"]), "0.0.0.0", 1)
    assert cmd.count("--max-model-len") == 1
    assert cmd[-2:] == ["--max-model-len", "512"]


@pytest.mark.parametrize("flag", ["--api-key", "--port", "--host=::", "--served_model_name"])
def test_worker_owned_flags_in_vllm_args_are_refused(flag):
    with pytest.raises(ConfigError, match="models 'm1'"):
        build_command("vllm", model([flag, "x"]), "0.0.0.0", 1)


def test_api_key_goes_to_the_environment_never_to_argv():
    job = identify(env={"SLURM_JOB_ID": "42"}, hostname="n1").job_id
    key = vllm_api_key(SECRET, job)
    cmd = build_command("vllm", model(), "0.0.0.0", 1)
    env = build_env({"PATH": "/bin", "VLLM_API_KEY": "stale"}, {"VLLM_NO_USAGE_STATS": "1"}, key)
    assert not any(key in a for a in cmd)
    assert "--api-key" not in cmd
    assert env == {"PATH": "/bin", "VLLM_NO_USAGE_STATS": "1", "VLLM_API_KEY": key}


def test_worker_env_overrides_inherited_env():
    env = build_env({"A": "job"}, {"A": "config"}, "k")
    assert env["A"] == "config"


@pytest.mark.parametrize(
    "bind,expected",
    [
        ("0.0.0.0", "127.0.0.1"),
        ("", "127.0.0.1"),
        ("::", "[::1]"),
        ("10.0.0.5", "10.0.0.5"),
        ("fe80::1", "[fe80::1]"),
    ],
)
def test_local_address(bind, expected):
    assert local_address(bind) == expected


def test_identity_inside_slurm():
    ident = identify(
        env={"SLURM_JOB_ID": "77", "SLURMD_NODENAME": "n3", "SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1"},
        hostname="host",
    )
    assert (ident.job_id, ident.node, ident.gpus, ident.in_slurm) == ("77", "n3", "2,3", True)


def test_identity_outside_slurm_is_per_process():
    ident = identify(env={"CUDA_VISIBLE_DEVICES": "0"}, hostname="box", pid=123)
    assert (ident.job_id, ident.node, ident.gpus, ident.in_slurm) == ("local-box-123", "box", "0", False)


def test_identity_job_id_flag_wins():
    assert identify(env={"SLURM_JOB_ID": "77"}, job_id="x9", hostname="h").job_id == "x9"


def test_vllm_runs_niced_unless_nice_is_0():
    cmd = build_command("/venv/bin/vllm", model(), "0.0.0.0", 8123)
    assert niced(cmd, 10) == ["nice", "-n", "10", *cmd]
    assert niced(cmd, 0) == cmd
