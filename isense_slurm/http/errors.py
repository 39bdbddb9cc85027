"""OpenAI-style error bodies: `{"error": {"message", "type", "param", "code"}}`.

Clients and aggregators parse these, so every refusal of the server uses one (the
OpenAI routes, worker control, hook events, /metrics, aiohttp's own), and the SSE
variant ends a stream that cannot be finished.
"""

import json

from aiohttp import web

# status -> (type, code): what OpenAI itself sends for the same refusal.
KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
    500: ("api_error", "internal_error"),
    502: ("api_error", "upstream_error"),
}


def error_dict(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    kind, default_code = KINDS.get(status, ("api_error", None))
    return json.dumps(error_dict(message, kind, param, code or default_code)).encode()


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        status=status,
        body=error_body(status, message, param=param, code=code),
        content_type="application/json",
        headers=headers,
    )


def sse_error_event(message: str, type: str = "api_error", code: str | None = "upstream_error") -> bytes:
    """The last event of a stream that cannot be finished (followed by `data: [DONE]`)."""
    return b"data: " + json.dumps(error_dict(message, type, None, code)).encode() + b"\n\n"


def no_worker(model: str, retry_after: int) -> web.Response:
    """A fast 429: aggregators read 429 + Retry-After as 'no capacity now', not an outage."""
    return error_response(
        429,
        f"no capacity for model '{model}' right now; retry after {retry_after} s",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


def rate_limited(message: str, retry_after: int) -> web.Response:
    """A key's (or its group's) rate limit: 429 + Retry-After, as OpenAI sends it."""
    return error_response(429, message, code="rate_limit_exceeded", headers={"Retry-After": str(retry_after)})


def insufficient_quota(message: str) -> web.Response:
    """A used-up budget: OpenAI's 429 `insufficient_quota`. `x-should-retry: false` tells
    the openai clients not to retry it (a retry cannot succeed before the budget renews)."""
    return web.Response(
        status=429,
        body=json.dumps(error_dict(message, "insufficient_quota", None, "insufficient_quota")).encode(),
        content_type="application/json",
        headers={"x-should-retry": "false"},
    )
