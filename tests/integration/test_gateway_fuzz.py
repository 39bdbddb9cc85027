"""Every bad request a clean 4xx: `isense gateway` as a real process, fuzzed over real
sockets with hypothesis.

No worker is registered, so a body the gateway accepts is answered 429 (no capacity)
for a configured model and 404 for any other: no vLLM is needed. Generated: JSON bodies
with random values for each field the gateway knows (and some it does not), raw bodies
(deep nesting, huge numbers, NaN, bytes that are not UTF-8, odd unicode), and raw HTTP
written to a socket (garbage request lines, methods and paths, header names and values,
over-long lines, bad Content-Length and chunked framing).

Asserted for every answer: no 5xx; a 4xx has an OpenAI-style JSON error body; and the
gateway's log never shows a traceback ("Traceback", "Error handling request",
"Unhandled exception"). Example counts are bounded so the module takes well under a
minute on a slow, busy host; nothing is timed.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway_harness import MODEL, SPARE, Gateway, Site, http

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
TRACES = ("Traceback", "Error handling request", "Unhandled exception")
# No example database (hypothesis's .hypothesis/ cache still appears; it gitignores
# itself): each run draws afresh, and a failure prints its example.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Watched:
    """The gateway process and the part of its log that the last check has not read."""

    def __init__(self, gateway: Gateway):
        self.gateway, self.offset = gateway, 0

    def new_log(self) -> str:
        text = self.gateway.log_text()
        new, self.offset = text[self.offset :], len(text)
        return new

    def assert_clean_log(self, what) -> None:
        new = self.new_log()
        assert not any(t in new for t in TRACES), f"after {what!r}:\n{new[-3000:]}"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    gateway = Gateway(Site(tmp_path_factory.mktemp("gateway-fuzz")))
    watched = Watched(gateway)
    yield watched
    time.sleep(0.5)  # a log line written after the last answer went out
    try:
        assert gateway.proc.poll() is None, "the gateway exited"
        watched.assert_clean_log("the whole module")
    finally:
        gateway.stop()


def assert_openai_refusal(status: int, content_type: str, text: str, what) -> None:
    assert status < 500, f"{status} for {what!r}: {text[:500]}"
    if status >= 400:
        assert content_type.startswith("application/json"), f"{status} {content_type} for {what!r}: {text[:300]}"
        body = json.loads(text)
        assert set(body) == {"error"}, body
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}, body
        assert isinstance(error["message"], str) and error["message"], body
        assert isinstance(error["type"], str) and error["type"], body


def post(gw: Watched, path: str, body: bytes, headers: dict | None = None):
    resp = http(
        "POST",
        gw.gateway.url + path,
        body=body,
        timeout=30,
        headers={**gw.gateway.auth(), "Content-Type": "application/json", **(headers or {})},
    )
    assert_openai_refusal(resp.status_code, resp.headers.get("Content-Type", ""), resp.text, body[:300])
    gw.assert_clean_log(body[:300])
    return resp


# --- JSON bodies: random types for every field ----------------------------------------

# Odd unicode: any code point, lone surrogates included (json.dumps escapes them).
odd_text = st.text(st.characters(exclude_categories=()), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text
)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3), max_leaves=8
)


# What OpenAI accepts, field by field (vLLM's extensions and unknown fields included).
text = st.text(max_size=12)
part = st.fixed_dictionaries({"type": st.just("text"), "text": text})
user_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "developer"]),
        "content": text | st.lists(part, min_size=1, max_size=2),
    },
    optional={"name": text},
)
assistant_message = st.fixed_dictionaries({"role": st.just("assistant")}, optional={"content": st.none() | text})
token_ids = st.lists(st.integers(0, 2**31), min_size=1, max_size=4)
finite = {"allow_nan": False, "allow_infinity": False}
COMMON = {
    "stream": st.none() | st.booleans(),
    "max_tokens": st.none() | st.integers(1, 2**63 - 1),
    "n": st.integers(1, 128),
    "temperature": st.floats(0, 2, **finite) | st.integers(0, 2),
    "top_p": st.floats(0, 1, **finite),
    "presence_penalty": st.floats(-2, 2, **finite),
    "frequency_penalty": st.floats(-2, 2, **finite),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stop": st.none() | text | st.lists(text, max_size=4),
    "user": odd_text,
    "logit_bias": st.dictionaries(st.integers(0, 50000).map(str), st.floats(-100, 100, **finite), max_size=2),
    "ignore_eos": st.booleans(),  # vLLM's extensions pass through
    "top_k": st.integers(-1, 50),
    "x-unknown": json_values,
}
VALID = {
    CHAT: {
        **COMMON,
        "messages": st.lists(user_message | assistant_message, min_size=1, max_size=3),
        "max_completion_tokens": st.integers(1, 10**6),
        "logprobs": st.booleans(),
        "top_logprobs": st.integers(0, 20),
        "tools": st.lists(st.fixed_dictionaries({"type": st.just("function"), "function": json_values}), max_size=2),
        "tool_choice": st.sampled_from(["auto", "none", "required"]),
        "parallel_tool_calls": st.booleans(),
        "response_format": st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
    },
    COMPLETIONS: {
        **COMMON,
        "prompt": text
        | st.lists(text, min_size=1, max_size=3)
        | token_ids
        | st.lists(token_ids, min_size=1, max_size=2),
        "logprobs": st.integers(0, 5),
        "echo": st.booleans(),
        "best_of": st.integers(1, 5),
        "suffix": st.none() | text,
    },
}
REQUIRED = {CHAT: "messages", COMPLETIONS: "prompt"}
KNOWN = sorted({"model", "stream_options", *VALID[CHAT], *VALID[COMPLETIONS]})


@st.composite
def bodies(draw):
    """(path, body, mutated): a body OpenAI accepts, then perhaps a few of its fields
    (any known one, or one it lacks) replaced by any JSON value at all."""
    path = draw(st.sampled_from([CHAT, COMPLETIONS]))
    fields = VALID[path]
    body = draw(
        st.fixed_dictionaries(
            {"model": st.sampled_from([MODEL, SPARE, "no-such-model"]), REQUIRED[path]: fields[REQUIRED[path]]},
            optional={k: v for k, v in fields.items() if k != REQUIRED[path]},
        )
    )
    if body.get("stream") is True and draw(st.booleans()):
        body["stream_options"] = {"include_usage": draw(st.booleans())}
    mutated = draw(st.lists(st.sampled_from(KNOWN), max_size=2, unique=True))
    for name in mutated:
        body[name] = draw(json_values | st.sampled_from(["yes", 0, 1, -1, 2**64, "", [], {}]))
    return path, body, mutated


@settings(FUZZ, max_examples=300)
@given(case=bodies(), ascii_only=st.booleans())
def test_generated_json_bodies(gw, case, ascii_only):
    path, body, mutated = case
    raw = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    resp = post(gw, path, raw)
    try:
        raw.decode()
    except UnicodeDecodeError:  # a lone surrogate, written as such: not UTF-8
        assert resp.status_code == 400
        return
    if not mutated:  # an OpenAI-valid body: accepted (429: no worker) or an unknown model
        assert resp.status_code == (404 if body["model"] == "no-such-model" else 429), (resp.text, body)
    if resp.status_code == 429:  # what the gateway reads must have had OpenAI's types
        assert body.get("stream") in (True, False, None)
    if body.get("stream") == "yes":
        assert resp.status_code == 400
        # The first wrong field is named: "stream", or the other field mutated with it.
        param = json.loads(resp.text)["error"]["param"]
        assert param == "stream" if mutated == ["stream"] else param in mutated, (param, body)


# --- raw bodies: nesting, numbers, encodings ------------------------------------------

nested = st.one_of(
    st.integers(1, 60_000).map(lambda d: b"[" * d + b"1" + b"]" * d),
    st.integers(1, 60_000).map(lambda d: b'{"a":' * d + b"1" + b"}" * d),
    st.integers(1, 5_000).map(lambda d: b'{"model": "%s", "prompt": ' % MODEL.encode() + b"[" * d + b"]" * d + b"}"),
)
huge_numbers = st.sampled_from(
    [b"1" * 5000, b"1e400", b"-1e400", b"NaN", b"Infinity", b"-0", b"1.5e-400", b"9" * 20, b"0x10", b"01", b"1_000"]
).map(lambda n: b'{"model": "%s", "prompt": "x", "max_tokens": %s, "temperature": %s}' % (MODEL.encode(), n, n))
raw_bodies = st.one_of(
    nested,
    huge_numbers,
    st.binary(max_size=64),
    st.binary(max_size=32).map(lambda b: b'{"model": "' + b + b'", "prompt": "x"}'),  # not UTF-8, mostly
    odd_text.map(lambda t: json.dumps({"model": MODEL, "prompt": t}).encode("utf-16")),
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"\xef\xbb\xbf{}", b"{}" * 3, b" ", b"{" * 3]),
)


@FUZZ
@given(path=st.sampled_from([CHAT, COMPLETIONS]), body=raw_bodies)
def test_raw_bodies(gw, path, body):
    post(gw, path, body)


@FUZZ
@given(
    action=st.sampled_from(["register", "heartbeat", "deregister"]),
    body=raw_bodies
    | st.sampled_from(
        [
            b"[" * 100_000 + b"]" * 100_000,  # deep enough to make the parser recurse
            json.dumps({"job_id": "\ud800", "model": MODEL, "url": "http://127.0.0.1:9"}).encode(),  # a lone surrogate
            json.dumps({"job_id": "x" * 10, "model": MODEL, "url": "http://127.0.0.1:9"}).encode(),  # no token: 401
        ]
    ),
)
def test_worker_control_refusals(gw, action, body):
    """The workers' control routes: bad bodies get the same clean refusals (before auth)."""
    post(gw, f"/internal/workers/{action}", body, headers={"Authorization": "Bearer 00"})


def test_oversized_bodies_are_413(gw):
    big = json.dumps({"model": MODEL, "prompt": "x" * 1_100_000}).encode()
    assert post(gw, COMPLETIONS, big).status_code == 413
    # the same without a Content-Length: chunked, read until the limit
    answer = raw_exchange(
        gw,
        b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
        + b"Authorization: Bearer "
        + gw.gateway.site.key.encode()
        + b"\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(big)
        + big
        + b"\r\n0\r\n\r\n",
    )
    assert answer is not None and answer[0] == 413


# --- raw HTTP over a socket -----------------------------------------------------------


def raw_exchange(gw: Watched, data: bytes, method: str = "GET"):
    """Send `data` on a new connection; (status, content type, body) of the first
    answer, or None when the gateway closed without one. A small reader of its own:
    http.client refuses the status line aiohttp answers an "HTTP/2.0" request with."""
    with socket.create_connection(("127.0.0.1", gw.gateway.port), timeout=30) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the gateway answered and closed before it had read everything
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                chunk = _recv(sock)
                if not chunk:
                    assert not buf, f"the answer was cut in its head: {buf!r}"
                    return None
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            if status != 100:  # skip "100 Continue"
                break
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "content-length" in headers:
            length = int(headers["content-length"])
            while len(buf) < length and (chunk := _recv(sock)):
                buf += chunk
            body = buf[:length]
        else:  # until the gateway closes
            while chunk := _recv(sock):
                buf += chunk
            body = buf
        return status, headers.get("content-type", ""), body.decode("utf-8", "replace")


def _recv(sock) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


# A request that aiohttp parses, with one part (or none) made wrong.
TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
token = st.text(st.sampled_from(TOKEN), min_size=1, max_size=10).map(str.encode)
known_methods = st.sampled_from([b"GET", b"POST", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH"])
good_methods = st.one_of(known_methods, known_methods, known_methods, token)  # llhttp refuses unknown ones
known_paths = st.sampled_from(
    [
        b"/v1/chat/completions",
        b"/v1/completions",
        b"/v1/models",
        b"/internal/workers",
        b"/internal/workers/register",
        b"/internal/workers/heartbeat",
        b"/health",
        b"/metrics",
        b"/",
        b"//v1/models",
        b"/v1/models/../models",
        b"/v1/models?x=%zz",
        b"http://example.com/v1/models",
        b"/v1/chat/completions#frag",
    ]
)
good_paths = st.one_of(
    known_paths,
    known_paths,
    known_paths,
    odd_text.map(lambda t: ("/" + quote(t, safe="/?&=", errors="surrogatepass")).encode()),
)
good_header = st.tuples(
    st.sampled_from(
        [
            b"Authorization",
            b"Content-Type",
            b"Accept",
            b"X-Request-Id",
            b"Expect",
            b"Content-Encoding",
            b"Upgrade",
            b"Connection",
        ]
    )
    | token,
    st.sampled_from(
        [
            b"Bearer isk-nope",
            b"Bearer KEY",
            b"Basic abc",
            b"application/json",
            b"100-continue",
            b"teapot",
            b"gzip",
            b"br",
            b"deflate",
            b"identity",
            b"websocket",
            b"keep-alive",
            b"close",
            b"upgrade",
        ]
    )
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20).map(str.encode),
)
good_bodies = st.sampled_from(
    [b'{"model": "%s", "prompt": "x"}' % m for m in (MODEL.encode(), SPARE.encode())]
    + [
        b'{"model": "%s", "messages": [{"role": "user", "content": "hi"}]}' % MODEL.encode(),
        b"{}",
        b'{"job_id": "x", "model": "m", "url": "http://x"}',
    ]
) | st.binary(max_size=40)
good_bodies = st.one_of(good_bodies, good_bodies.filter(lambda b: b.startswith(b"{")))
FAULTS = {
    "none": st.none(),
    "method": st.binary(min_size=1, max_size=8).filter(lambda b: b" " not in b),
    "path": st.binary(max_size=40).map(lambda b: b"/" + b.replace(b" ", b""))
    | st.sampled_from([b"*", b"example.com:443", b"", b"/%00", b"/a b"]),
    "version": st.sampled_from(
        [b"HTTP/2.0", b"HTTP/1.1 extra", b"http/1.1", b"", b"HTTP/1", b"HTTP/0.9", b"HTTP/1.1\x00"]
    ),
    "request line": st.binary(max_size=60).map(lambda b: b.replace(b"\r\n", b""))
    | st.integers(8000, 9000).map(lambda n: b"GET /" + b"a" * n + b" HTTP/1.1"),
    "header name": st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b":", b"")),
    "header value": st.binary(max_size=30).map(lambda b: b.replace(b"\r\n", b""))
    | st.integers(8000, 9000).map(lambda n: b"a" * n)
    | st.sampled_from([b"Bearer isk-\xff\xfe", b"\x00", b"a\x7fb"]),
    "header line": st.sampled_from([b"no colon", b" leading: space", b"X : y", b": empty name", b"X:\ty", b"X: y\rZ"]),
    "too many headers": st.integers(101, 300),
    "content length": st.sampled_from([b"abc", b"-1", b"1.5", b" ", b"", b"0x10", b"9" * 30, b"+3", b"1, 2"]),
    "two content lengths": st.none(),
    "chunk size": st.sampled_from([b"zz", b"-1", b"f" * 20, b"3;\x01", b"3 x", b"", b"0x3"]),
    "chunked and length": st.none(),
    "transfer encoding": st.sampled_from([b"gzip", b"chunked, gzip", b"identity", b"chunkedx", b"\xff"]),
}


@st.composite
def raw_requests(draw):
    fault = draw(st.sampled_from(sorted(FAULTS)))
    bad = draw(FAULTS[fault])
    method = bad if fault == "method" else draw(good_methods)
    path = bad if fault == "path" else draw(good_paths)
    version = bad if fault == "version" else draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]))
    line = method + b" " + path + (b" " + version if version else b"")
    lines = [bad if fault == "request line" else line, b"Host: gateway"]
    lines += [
        name + b": " + value
        for name, value in draw(st.lists(good_header, max_size=4))
        if name.lower() not in (b"content-length", b"transfer-encoding")
    ]
    if fault == "header name":
        lines.append(bad + b": x")
    elif fault == "header value":
        lines.append(b"X-Fuzz: " + bad)
    elif fault == "header line":
        lines.append(bad)
    elif fault == "too many headers":
        lines += [b"X-%d: y" % i for i in range(bad)]
    body = draw(good_bodies)
    # Every framing keeps the request complete: no answer waits for bytes that never come.
    if fault == "content length":
        lines.append(b"Content-Length: " + bad)
    elif fault == "two content lengths":
        lines += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
    elif fault == "chunked and length":
        lines += [b"Transfer-Encoding: chunked", b"Content-Length: %d" % len(body)]
    elif fault == "transfer encoding":
        lines.append(b"Transfer-Encoding: " + bad)
    elif fault == "chunk size" or draw(st.booleans()):
        lines.append(b"Transfer-Encoding: chunked")
        body = (bad if fault == "chunk size" else b"%x" % len(body)) + b"\r\n" + body + b"\r\n0\r\n\r\n"
    else:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body, method, fault


@settings(FUZZ, max_examples=400)
@given(request=raw_requests())
def test_raw_http(gw, request):
    data, method, fault = request
    data = data.replace(b"Bearer KEY", b"Bearer " + gw.gateway.site.key.encode())
    answer = raw_exchange(gw, data, method.decode("latin-1"))
    if answer is not None:  # None: the gateway closed without answering (an incomplete request)
        status, content_type, text = answer
        if method != b"HEAD":
            assert_openai_refusal(status, content_type, text, data[:300])
        else:
            assert status < 500, data[:300]
    gw.assert_clean_log(data[:300])


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # TLS on the plain port
        b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(200)) + b"\r\n",  # too many headers
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /v1/completions HTTP/1.1\r\nHost: a\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    ],
)
def test_known_malformed_http(gw, data):
    answer = raw_exchange(gw, data)
    assert answer is not None and answer[0] == 400
    assert_openai_refusal(*answer, data[:100])
    gw.assert_clean_log(data[:100])
