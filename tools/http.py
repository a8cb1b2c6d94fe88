"""``http_get``: fetch a URL for the model, with an SSRF guard, size and time caps.

The model decides which URL to fetch, and the text it read may come from an attacker, so the
guard assumes the worst: no loopback, link-local (169.254.169.254, the cloud metadata address),
private, shared, multicast or reserved addresses. The check runs on the address actually
connected: the host name is resolved once, every address is checked, and the connection goes to
that checked address (the original name still serves as Host header and TLS server name), so a
DNS answer that changes between check and connect (rebinding) cannot slip through. Redirects are
followed by hand, each hop checked the same way.

IPv6 forms that carry an IPv4 address inside (IPv4-mapped ``::ffff:a.b.c.d``, 6to4
``2002:AABB:CCDD::``, Teredo) are judged by that address, so ``2002:7f00:1::`` is loopback.
NAT64 prefixes (``64:ff9b::/96``, ``64:ff9b:1::/48``), the deprecated IPv4-compatible form
(``::a.b.c.d``) and the 6to4 relay anycast block ``192.88.99.0/24`` are refused whatever they
embed: a NAT64 gateway reaches whatever IPv4 network it sits on, and none of them is a web host.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit, urlunsplit

import anyio
import httpx
from pydantic import BaseModel

from whalebone.dsml.untrusted import neutralise
from whalebone.tools.registry import ToolError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class HttpPolicy(BaseModel):
    max_bytes: int = 1_000_000
    timeout: float = 20.0
    max_redirects: int = 5
    # Networks explicitly allowed even though they are not public (e.g. a company proxy).
    allow_networks: list[str] = []
    schemes: tuple[str, ...] = ("http", "https")


_NEVER_PUBLIC: list[Network] = [ipaddress.ip_network(n) for n in (
    "64:ff9b::/96", "64:ff9b:1::/48",  # NAT64, well-known and local-use (RFC 6052, RFC 8215)
    "::/96",  # IPv4-compatible IPv6 (deprecated, RFC 4291)
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated, RFC 7526)
)]


def _embedded(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a 6to4 or Teredo address carries, if it is one."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    return ip.teredo[1] if ip.teredo is not None else None


def _is_public(ip: Address) -> bool:
    if any(ip.version == net.version and ip in net for net in _NEVER_PUBLIC):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _is_public(ip.ipv4_mapped)  # the IPv4 address itself, spelt as IPv6
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner is not None and not _is_public(inner):
            return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local)


def check_address(ip: Address, allow: Sequence[Network] = ()) -> None:
    if any(ip in net for net in allow):
        return
    if not _is_public(ip):
        raise ToolError(f"refused: {ip} is not a public address (loopback, link-local, private "
                        "and reserved ranges are blocked)")


async def resolve(host: str, port: int, allow: Sequence[Network] = ()) -> Address:
    """Resolve ``host`` and check every address it has; return the first."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, allow)
        return literal
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ToolError(f"cannot resolve {host!r}: {e}") from None
    addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addrs:
        raise ToolError(f"cannot resolve {host!r}")
    for ip in addrs:  # every answer: one bad address in the set is enough to refuse
        check_address(ip, allow)
    return addrs[0]


async def http_get(url: str, policy: HttpPolicy | None = None) -> str:
    """Fetch ``url`` and return status, content type and the (neutralised) body text."""
    policy = policy or HttpPolicy()
    allow = [ipaddress.ip_network(n) for n in policy.allow_networks]
    async with httpx.AsyncClient(timeout=policy.timeout, follow_redirects=False,
                                 trust_env=False) as client:
        for _ in range(policy.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in policy.schemes or not parts.hostname:
                raise ToolError(f"refused: only http(s) URLs with a host are fetched, not "
                                f"{url[:200]!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            ip = await resolve(parts.hostname, port, allow)
            netloc = f"[{ip}]" if ip.version == 6 else str(ip)
            pinned = urlunsplit((parts.scheme, f"{netloc}:{port}", parts.path or "/",
                                 parts.query, ""))
            headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "Accept-Encoding": "identity"}
            request = client.build_request("GET", pinned, headers=headers,
                                           extensions={"sni_hostname": parts.hostname})
            try:
                response = await client.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    return await _read(response, policy.max_bytes)
                finally:
                    await response.aclose()
            except httpx.HTTPError as e:
                raise ToolError(f"fetching {url[:200]} failed: {type(e).__name__}: {e}") from None
    raise ToolError(f"too many redirects (more than {policy.max_redirects})")


async def _read(response: httpx.Response, max_bytes: int) -> str:
    body = bytearray()
    truncated = False
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            truncated = True
            del body[max_bytes:]
            break
    text = body.decode(response.encoding or "utf-8", errors="replace")
    note = f" (truncated at {max_bytes} bytes)" if truncated else ""
    ctype = response.headers.get("content-type", "unknown")
    return f"HTTP {response.status_code} {ctype}{note}\n\n" + neutralise(text)
