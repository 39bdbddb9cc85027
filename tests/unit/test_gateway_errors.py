"""OpenAI-style error bodies of the gateway, and its small pure helpers."""

import json

import pytest

from isense_slurm.gateway.auth import KeyCache
from isense_slurm.gateway.front import model_card, per_token
from isense_slurm.gateway.ledger_link import end_reason
from isense_slurm.http.access import bearer
from isense_slurm.http.errors import error_body, no_worker, sse_error_event


@pytest.mark.parametrize(
    "status,kind,code",
    [
        (400, "invalid_request_error", "invalid_request"),
        (401, "invalid_request_error", "invalid_api_key"),
        (404, "invalid_request_error", "not_found"),
        (405, "invalid_request_error", "method_not_allowed"),
        (413, "invalid_request_error", "request_too_large"),
        (429, "rate_limit_exceeded", "rate_limit_exceeded"),
        (502, "api_error", "upstream_error"),
    ],
)
def test_error_body_has_the_four_openai_fields(status, kind, code):
    body = json.loads(error_body(status, "why"))
    assert body == {"error": {"message": "why", "type": kind, "param": None, "code": code}}


def test_error_body_param_and_code_override():
    body = json.loads(error_body(404, "no such model", param="model", code="model_not_found"))
    assert body["error"]["param"] == "model"
    assert body["error"]["code"] == "model_not_found"


def test_no_worker_is_429_with_retry_after():
    response = no_worker("m", 7)
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    assert json.loads(response.body)["error"]["type"] == "rate_limit_exceeded"


def test_sse_error_event_is_one_data_event():
    raw = sse_error_event("cut")
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n") and raw.count(b"\n") == 2
    assert json.loads(raw[6:])["error"]["message"] == "cut"


@pytest.mark.parametrize(
    "header,token",
    [
        ("Bearer isk-abc", "isk-abc"),
        ("bearer  isk-abc ", "isk-abc"),
        ("Basic x", None),
        ("", None),
        (None, None),
        ("Bearer", None),
        ("Bearer isk-\udcff\udcfe", None),
    ],  # bytes aiohttp surrogate-escaped
)
def test_bearer(header, token):
    assert bearer(header) == token


def test_key_cache_looks_up_by_hash_and_follows_revocation():
    import asyncio

    from isense_slurm.gateway.auth import sha256_hex

    loads = [{sha256_hex("isk-good"): "info"}, None, {}]

    async def load():
        return loads.pop(0)

    cache = KeyCache(load)

    async def scenario():
        await cache.refresh()
        assert cache.lookup("Bearer isk-good") == "info"
        assert cache.lookup("Bearer isk-bad") is None
        assert cache.lookup("Bearer sk-good") is None
        await cache.refresh()  # unchanged: keeps the keys
        assert cache.lookup("Bearer isk-good") == "info"
        await cache.refresh()  # revoked
        assert cache.lookup("Bearer isk-good") is None

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "per_mtok,text", [(0.4, "0.0000004"), (0.1, "0.0000001"), (0.05, "0.00000005"), (2, "0.000002"), (0, "0")]
)
def test_per_token_prices_are_plain_decimals(per_mtok, text):
    assert per_token(per_mtok) == text


def test_model_card_has_what_aggregators_read():
    class Price:
        input_per_mtok, output_per_mtok, cached_input_per_mtok = 0.1, 0.4, 0.05

    class Model:
        name, context_length, price = "m", 512, Price()

    card = model_card(Model(), 2, 123)
    assert card["id"] == "m" and card["object"] == "model" and card["created"] == 123
    assert card["owned_by"] and card["context_length"] == 512 and card["workers"] == 2
    assert card["pricing"] == {"prompt": "0.0000001", "completion": "0.0000004", "input_cache_read": "0.00000005"}


@pytest.mark.parametrize(
    "reason,ledger", [("failed", "failed"), ("heartbeat timeout", "lost"), ("sigterm", None), (None, None)]
)
def test_end_reason(reason, ledger):
    assert end_reason(reason) == ledger
