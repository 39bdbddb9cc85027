"""Refusals made by aiohttp itself, in the server's words: an OpenAI-style JSON body,
and one log line instead of a traceback.

aiohttp answers some requests before any handler or middleware sees them:
- its HTTP parser's errors (an over-long request line or header, bad bytes in a
  header, bad chunked encoding, a bad Content-Length, a method that is not a token,
  TLS on the plain port) go to `RequestHandler.handle_error()`, which answers a
  plain-text 400 and logs the parser's exception with its traceback at ERROR
  ("Error handling request");
- `web.HTTPException`s raised outside the handlers (the router's 404 for a path that
  does not start with "/", such as `OPTIONS *` or `CONNECT host:443`; 417 for an
  `Expect` other than 100-continue) are sent with a plain-text body.

And two gaps around a request body that fails after its headers were read (a bad
chunk, a Content-Encoding that does not decode): when the parser fails on a later
packet, the handler's body is never failed and the client waits for an answer until it
gives up; and after a handler answered a body error, aiohttp's lingering read of the
rest of the body raises it again and logs "Unhandled exception" with a traceback.

aiohttp has no public hook for any of this (aio-libs/aiohttp#3287), so
`JsonErrorHandler` subclasses its `RequestHandler` (the per-connection protocol) and
overrides `handle_error`, `finish_response` and `data_received`; `JsonErrorRunner` is
the `web.AppRunner` whose server makes those protocols: http/server.py serves the app
with `JsonErrorRunner(app, ...)` where `web.AppRunner(app, ...)` would be. They lean on a few
of aiohttp 3.x's private names (`_make_server`, `Server._kwargs`, `_ErrInfo`,
`_messages`, `_current_request`); tests/unit/test_http_protocol.py pins the
behaviour against the installed aiohttp, and fails loudly if an upgrade moves them.

A 5xx from handle_error is a bug or a timeout: it keeps aiohttp's log line with the
traceback, and only its body becomes JSON.
"""

import logging
import re

from aiohttp import web
from aiohttp.web_protocol import _ErrInfo  # what the parser's failure is queued as

from isense_slurm.http import errors

log = logging.getLogger("isense.http")

SHOWN = 200  # characters of a parser's message sent back and logged
_STATUS_PREFIX = re.compile(r"\d{3}, message:?")  # how a RequestPayloadError's text starts


def describe(exc: BaseException | None, message: str | None = None) -> str:
    """The first line of a parser error, e.g. "Invalid header value char"; the lines
    after it only repeat the client's bytes. A RequestPayloadError's text starts with
    "400, message:", which is skipped."""
    text = message or (getattr(exc, "message", None) or str(exc) if exc is not None else "")
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if lines and _STATUS_PREFIX.fullmatch(lines[0]):
        lines = lines[1:]
    first = lines[0].rstrip(":").strip() if lines else ""
    return first[:SHOWN] or "malformed request"


def json_refusal(exc: web.HTTPException) -> web.Response:
    """An HTTPException aiohttp sends as text, with the same status and headers, in JSON."""
    message = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    return errors.error_response(exc.status, message or exc.reason, headers=headers or None)


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, with JSON refusals (see the module's doc)."""

    __slots__ = ()

    def handle_error(
        self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            # Logs "Error handling request" with the traceback, and raises ConnectionError
            # when part of a response went out already; its text body is dropped.
            super().handle_error(request, status, exc, message)
            resp = errors.error_response(
                status, "internal error in the gateway" if status == 500 else f"the gateway could not answer ({status})"
            )
        else:
            text = describe(exc, message)
            log.info("bad HTTP request from %s: %s", request.remote, text)
            if request.writer.output_size > 0:
                raise ConnectionError("a response was sent already, cannot send another with the error message")
            resp = errors.error_response(status, f"malformed HTTP request: {text}", code="bad_http_request")
        resp.force_close()
        return resp

    async def finish_response(self, request, resp, start_time):
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            resp = json_refusal(resp)
        done = await super().finish_response(request, resp, start_time)
        if request.content.exception() is not None:
            # The body failed: nothing to linger for (aiohttp's lingering read would
            # raise the error again and log it with a traceback). The answer is in the
            # transport's buffer; closing sends it first.
            self.force_close()
        return done

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._messages and self._current_request is not None:
            failed = self._messages[-1][0]
            payload = self._current_request.content
            if isinstance(failed, _ErrInfo) and not payload.is_eof() and payload.exception() is None:
                # The parser failed inside the body the handler is reading: fail that
                # read (the handler answers 400) rather than leave it waiting.
                payload.set_exception(web.RequestPayloadError(describe(failed.exc, failed.message)))


class JsonErrorServer(web.Server):
    """A `web.Server` whose connections are JsonErrorHandlers."""

    def __call__(self) -> web.RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """`web.AppRunner` for the server's app: the same server, with JsonErrorHandler
    connections."""

    async def _make_server(self) -> web.Server:
        stock = await super()._make_server()
        return JsonErrorServer(
            stock.request_handler,
            request_factory=stock.request_factory,
            handler_cancellation=stock.handler_cancellation,
            loop=stock._loop,
            **stock._kwargs,
        )
