"""aiohttp's own refusals in JSON (http/protocol.py), against the installed aiohttp:
a small app served by JsonErrorRunner on loopback, spoken to over raw sockets."""

import asyncio
import json
import logging

import pytest
from aiohttp import web

from isense_slurm.http.protocol import JsonErrorHandler, JsonErrorRunner, describe

HEAD = b"Host: a\r\nConnection: close\r\n"


async def _echo(request: web.Request) -> web.Response:
    if request.path == "/boom":
        raise RuntimeError("a bug")
    try:
        raw = await request.read()
    except web.RequestPayloadError as err:  # as the gateway's inference handler does
        return web.json_response({"unreadable": describe(err)}, status=400)
    return web.json_response({"read": len(raw)})


async def _exchange(requests: list) -> list[bytes]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        assert isinstance(runner.server(), JsonErrorHandler)
        host, port = runner.addresses[0][:2]
        answers = []
        for raw in requests:
            reader, writer = await asyncio.open_connection(host, port)
            for part in raw if isinstance(raw, tuple) else (raw,):  # parts: separate packets
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.05)
            answers.append(await asyncio.wait_for(reader.read(), 10))
            writer.close()
        return answers
    finally:
        await runner.cleanup()


def exchange(*requests) -> list[tuple[int, dict, bytes]]:
    out = []
    for answer in asyncio.run(_exchange(list(requests))):
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        out.append((int(lines[0].split()[1]), headers, body))
    return out


MALFORMED = {
    "over-long header": b"POST /v1/x HTTP/1.1\r\nHost: a\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
    "over-long request line": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    "too many headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X%d: y\r\n" % i for i in range(200)) + b"\r\n",
    "control byte in a header name": b"GET / HTTP/1.1\r\nHost: a\r\nX\x01y: z\r\n\r\n",
    "NUL in a header value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "bad chunk size": b"POST / HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk size overflow": b"POST / HTTP/1.1\r\n"
    + HEAD
    + b"Transfer-Encoding: chunked\r\n\r\n"
    + b"f" * 20
    + b"\r\nabc\r\n0\r\n\r\n",
    "bad Content-Length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
    "negative Content-Length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    "two Content-Lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "Content-Length with chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 5\r\n\r\n0\r\n\r\n",
    "bad method": b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
    "bad version": b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
    "bad byte in the path": b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
    "TLS on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
}


def test_parser_errors_are_openai_400s_with_one_log_line(caplog):
    caplog.set_level(logging.DEBUG)
    answers = exchange(*MALFORMED.values())
    for (name, _), (status, headers, body) in zip(MALFORMED.items(), answers):
        assert status == 400, name
        assert headers["Content-Type"].startswith("application/json"), name
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, name
        assert error["message"].startswith("malformed HTTP request: "), name
        assert "\n" not in error["message"] and len(error["message"]) < 300, name
        assert (error["type"], error["code"]) == ("invalid_request_error", "bad_http_request"), name
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    lines = [r.getMessage() for r in caplog.records if r.name == "isense.http"]
    assert len(lines) == len(MALFORMED) and all(line.startswith("bad HTTP request from") for line in lines)


def test_aiohttp_http_exceptions_are_json():
    # A request target that is not a path does not reach the app's catch-all route
    # (the router's 404); an unknown Expect is refused by aiohttp (417).
    answers = exchange(
        b"OPTIONS * HTTP/1.1\r\n" + HEAD + b"\r\n",
        b"CONNECT example.com:443 HTTP/1.1\r\n" + HEAD + b"\r\n",
        b"POST /x HTTP/1.1\r\n" + HEAD + b"Expect: teapot\r\nContent-Length: 2\r\n\r\n{}",
    )
    assert [a[0] for a in answers] == [404, 404, 417]
    for _, headers, body in answers:
        assert headers["Content-Type"].startswith("application/json")
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}


def test_handler_bugs_stay_500s_with_their_traceback(caplog):
    [(status, headers, body)] = exchange(b"GET /boom HTTP/1.1\r\n" + HEAD + b"\r\n")
    assert status == 500 and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]["type"] == "api_error"
    assert "a bug" not in body.decode()
    assert any(r.exc_info and "Error handling request" in r.getMessage() for r in caplog.records)


def test_good_requests_are_untouched():
    answers = exchange(
        b"POST /x HTTP/1.1\r\n" + HEAD + b"Content-Length: 2\r\n\r\n{}",
        b"POST /x HTTP/1.1\r\n" + HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    )
    assert [(s, json.loads(b)) for s, _, b in answers] == [(200, {"read": 2}), (200, {"read": 2})]


def test_bodies_that_fail_after_the_headers_get_the_handlers_400(caplog):
    # A bad chunk in a later packet than the headers (aiohttp alone leaves the read
    # waiting), and a gzip body that does not decode (aiohttp alone logs a traceback
    # from its lingering read after the handler answered).
    chunked = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    answers = exchange(
        (chunked, b"zz\r\nabc\r\n0\r\n\r\n"),
        (chunked, b"2\r\n{}\r\n", b"zz\r\n"),
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nabcd",
    )
    assert [(s, json.loads(b)) for s, _, b in answers] == [
        (400, {"unreadable": "Invalid character in chunk size"}),
        (400, {"unreadable": "Invalid character in chunk size"}),
        (400, {"unreadable": "Can not decode content-encoding: gzip"}),
    ]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "exc,message,text",
    [
        (None, "Invalid header value char:\n\n  b'X: a\\x00b'\n        ^", "Invalid header value char"),
        (ValueError("x\ny"), None, "x"),
        (None, None, "malformed request"),
        (None, "a" * 1000, "a" * 200),
        (
            web.RequestPayloadError("400, message:\n  Can not decode content-encoding: gzip"),
            None,
            "Can not decode content-encoding: gzip",
        ),
    ],
)
def test_describe_keeps_the_first_line(exc, message, text):
    assert describe(exc, message) == text
