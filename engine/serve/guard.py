"""Keeping web pages out of a local server: the ``Host``, ``Origin`` and ``Content-Type`` checks
of ``whalebone serve`` (DNS rebinding and cross-site POSTs reach a keyless loopback server
otherwise)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from whalebone.engine.serve.http import ApiError


def host_name(value: str) -> str:
    """The host part of a ``Host`` header or an origin's authority, lower-cased: no port, an
    IPv6 literal without its brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class BrowserGuard:
    """ASGI middleware that keeps web pages out of a local server.

    A page can make the browser send requests to 127.0.0.1 (cross-site form POSTs) or, through
    DNS rebinding, to a name of its own that now resolves to 127.0.0.1; a server without a key
    would answer both. So: the ``Host`` must be a loopback name or address, one of ``hosts``
    (the configured names), or, with ``any_address`` (bound to every interface), any IP literal,
    which a rebinding page cannot send; an ``Origin`` (browsers send it cross-site) must pass the
    same test; and a POST must say its body is JSON, which a form or a "simple" cross-site
    request cannot. Refusals are 403/415 error JSON."""

    def __init__(self, app: ASGIApp, *, hosts: Sequence[str] = (), any_address: bool = False
                 ) -> None:
        self.app = app
        self.hosts = frozenset(host_name(h) for h in hosts if h)
        self.any_address = any_address

    def allowed(self, host: str) -> bool:
        if host in self.hosts or host == "localhost" or host.endswith(".localhost"):
            return True
        ip = _ip(host)
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback or self.any_address

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(Headers(scope=scope), scope["method"])
            if refusal is not None:
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers, method: str) -> ApiError | None:
        host = host_name(headers.get("host", ""))
        if not host or not self.allowed(host):
            return ApiError(403, f"Host {headers.get('host', '')[:100]!r} is not this server's: "
                            "use a loopback address or a host the server was configured with "
                            "(whalebone serve --allow-host)", code="host_not_allowed")
        origin = headers.get("origin")
        if origin is not None:
            _, sep, authority = origin.partition("://")
            if not sep or not self.allowed(host_name(authority.split("/", 1)[0])):
                return ApiError(403, f"requests from the web origin {origin[:100]!r} are not "
                                "allowed", code="origin_not_allowed")
        if method not in ("GET", "HEAD", "OPTIONS"):
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json" and not (ctype.startswith("application/")
                                                     and ctype.endswith("+json")):
                return ApiError(415, f"the body must be JSON (Content-Type: application/json), "
                                f"not {ctype or 'untyped'!r}", code="unsupported_media_type")
        return None
