"""One HTTP POST of a JSON body with a hard deadline over the whole exchange.

A raw HTTP/1.1 request on a socket rather than http.client or urllib: it keeps the
hook's start-up short (http.client pulls in email and ssl) and lets one deadline cover
connect, send and the answer. https loads ssl only when the URL asks for it.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

MAX_ANSWER_BYTES = 1 << 16


class SendError(Exception):
    """No HTTP answer: refused, unreachable, timed out, or garbled."""


def post_json(url: str, token: str, payload, timeout_s: float) -> tuple[int, str]:
    """POST `payload` as JSON to `url`; returns (status, body text). Raises SendError."""
    deadline = time.monotonic() + timeout_s
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SendError(f"not an http(s) URL: {url}")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    body = json.dumps(payload, separators=(",", ":")).encode()
    host_header = f"[{host}]" if ":" in host else host
    if parts.port:
        host_header += f":{parts.port}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\nUser-Agent: isense-hook\r\n\r\n"
    ).encode()

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SendError(f"no answer within {timeout_s:g} s")
        return remaining

    try:
        sock = socket.create_connection((host, port), timeout=left())
    except SendError:
        raise
    except OSError as err:
        raise SendError(f"cannot connect to {host_header}: {err.strerror or err}") from None
    try:
        if parts.scheme == "https":
            import ssl  # deferred: rarely used, costs milliseconds

            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        sock.settimeout(left())
        sock.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            sock.settimeout(left())
            chunk = sock.recv(8192)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_ANSWER_BYTES:
                break
    except SendError:
        raise
    except (TimeoutError, OSError) as err:
        raise SendError(f"{host_header}: {err.strerror or err or type(err).__name__}") from None
    finally:
        sock.close()
    status_line, _, rest = data.partition(b"\r\n")
    fields = status_line.split(b" ", 2)
    if len(fields) < 2 or not fields[0].startswith(b"HTTP/") or not fields[1].isdigit():
        raise SendError(f"{host_header}: not an HTTP answer")
    _, _, text = rest.partition(b"\r\n\r\n")
    return int(fields[1]), text.decode("utf-8", "replace")


def _complete(data: bytes) -> bool:
    """Headers and the whole body (by Content-Length; a 204 has none) are in."""
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
    if status in (b"204", b"304"):
        return True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return False  # no length: read until the server closes (we asked it to)
