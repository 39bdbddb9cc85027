"""The dev CPU vLLM (dev/vllm) answers the official openai client with exact usage.

Real parts: `dev/vllm up` installs vLLM (first time ~1 min) and makes the tiny model if
missing, then serves it; the tests talk to it over HTTP with the openai client.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[2]
DEV_VLLM = REPO / "dev" / "vllm"
MODEL = "tiny-llama"
MESSAGES = [{"role": "user", "content": "Say something about the sea."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server():
    """(base_url, api_key) of a dev vLLM started for this module, stopped at its end."""
    port = _free_port()
    key = secrets.token_hex(16)
    env = {**os.environ, "ISENSE_DEV_VLLM_KEY": key}
    up = subprocess.run(
        [str(DEV_VLLM), "up", "--port", str(port)], env=env, capture_output=True, text=True, timeout=900
    )
    try:
        if up.returncode != 0:
            pytest.fail(f"dev/vllm up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
        yield f"http://127.0.0.1:{port}/v1", key
    finally:
        subprocess.run(
            [str(DEV_VLLM), "down", "--port", str(port)], capture_output=True, text=True, timeout=60, check=True
        )
        status = subprocess.run(
            [str(DEV_VLLM), "status", "--port", str(port)], capture_output=True, text=True, timeout=30
        )
        assert status.returncode == 3, status.stdout  # nothing left running


@pytest.fixture(scope="module")
def client(vllm_server):
    base_url, key = vllm_server
    with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60) as c:
        yield c


def test_models_lists_tiny_llama(client):
    models = {m.id: m for m in client.models.list()}
    assert MODEL in models
    assert models[MODEL].model_extra.get("max_model_len") == 512


def test_chat_completion_reports_exact_usage(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=16, extra_body={"ignore_eos": True}
    )  # random weights may emit the end token early
    assert reply.model == MODEL
    assert reply.choices[0].finish_reason == "length"
    assert reply.choices[0].message.content
    usage = reply.usage
    assert usage.completion_tokens == 16
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + 16


def test_streamed_chat_completion_ends_with_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    *content_chunks, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 16
    assert last.usage.prompt_tokens > 0
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks if c.choices)
    assert text
    assert content_chunks[-1].choices[0].finish_reason == "length"


def test_streamed_and_plain_answers_agree_when_greedy(client):
    kwargs = dict(model=MODEL, messages=MESSAGES, max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    plain = client.chat.completions.create(**kwargs).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **kwargs) if c.choices
    )
    assert streamed == plain


def test_wrong_api_key_is_refused(vllm_server):
    base_url, _ = vllm_server
    with openai.OpenAI(base_url=base_url, api_key="not-the-key", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=1)
