"""Parsing of single config values: hosts, host:port, http(s) URLs.

Each check returns the normalised value or raises ValueError with what is wrong; the
table reader turns that into a FILE:LINE: key: message line.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def check_host(host: str) -> str:
    """A hostname, IPv4 or IPv6 address (no brackets, no port); raises ValueError."""
    if not host:
        raise ValueError("empty host")
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ValueError(f'"{host}" is not a valid IPv6 address') from None
    if re.fullmatch(r"[\d.]+", host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError(f'"{host}" is not a valid IPv4 address') from None
    if not _HOSTNAME_RE.match(host):
        raise ValueError(f'"{host}" is not a valid hostname')
    return host


def parse_host_port(text: str) -> tuple[str, int]:
    """Parse "host:port" or "[v6]:port"; raises ValueError with what is wrong."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0 or not text[close + 1 :].startswith(":"):
            raise ValueError(f'"{text}" is not [IPv6]:port, e.g. "[::1]:8000"')
        host, port = text[1:close], text[close + 2 :]
        if ":" not in host:
            raise ValueError(f'brackets are for IPv6 addresses only, got "[{host}]"')
    else:
        if text.count(":") > 1:
            raise ValueError(f'"{text}": write IPv6 addresses in brackets, e.g. "[::]:8000"')
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f'"{text}" has no port: expected host:port, e.g. "0.0.0.0:8000"')
        if not host:
            raise ValueError(f'"{text}" has no host: use "0.0.0.0{text}" to listen on all interfaces')
    host = check_host(host)
    if not port.isdigit():
        raise ValueError(f'port "{port}" is not a number')
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {number} is out of range 1..65535")
    return host, number


def format_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def check_http_url(text: str) -> str:
    """An http(s)://host[:port][/path] URL; raises ValueError."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f'"{text}" must start with http:// or https://')
    if not parts.hostname:
        raise ValueError(f'"{text}" has no host')
    try:
        _ = parts.port  # urllib checks the port only when asked
    except ValueError:
        raise ValueError(f'"{text}" has a bad port (1..65535)') from None
    if parts.port == 0:
        raise ValueError(f'"{text}" has a bad port (1..65535)')
    check_host(parts.hostname)
    if parts.query or parts.fragment:
        raise ValueError(f'"{text}" must not carry a query or fragment')
    return text.rstrip("/")
