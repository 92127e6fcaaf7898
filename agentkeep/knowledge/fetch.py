"""Fetching a URL to add to a knowledge base. A server fetching URLs its callers give
(AgentOS) passes `allowed` networks, and then the server cannot be made to reach its own
network: every address a host name resolves to must be public (not private, loopback,
link-local, shared, reserved or multicast) unless an allowed network holds it. The check
runs where the connection is made, for every redirect hop, and the connection goes to the
address that was checked, so a DNS answer that changes between check and connect
(rebinding) cannot slip through. `allowed=None` (a program adding its own URLs) checks
nothing."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import urllib.parse
from typing import Any, Iterable, Sequence

import httpcore

from agentkeep.db.errors import InvalidInputError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
REDIRECTS = (301, 302, 303, 307, 308)


class AddressRefused(InvalidInputError):
    """The URL's host is on a network the server does not fetch from."""


def networks(allowed: Iterable[str]) -> tuple[Network, ...]:
    """Parse `url_allow_networks` ("10.0.0.0/8", "127.0.0.1/32"...)."""
    try:
        return tuple(ipaddress.ip_network(n, strict=False) for n in allowed)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"url_allow_networks: {exc}") from None


def _public(address: str, allowed: Sequence[Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if any(ip in net for net in allowed):
        return True
    return ip.is_global and not ip.is_multicast


def checked_address(host: str, port: int, allowed: Sequence[Network]) -> str:
    """The address to connect to for `host`: all it resolves to must be public (or allowed)."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from None
    refused = sorted(a for a in found if not _public(a, allowed))
    if refused:
        raise AddressRefused(f"{host!r} resolves to {', '.join(refused)}: the server does not fetch from private, "
                             "loopback or link-local addresses (AgentOS(url_allow_networks=) allows some)")
    return sorted(found)[0]


def check_url(url: Any, allowed: Sequence[Network] | None) -> str:
    """Refuse at once what cannot be fetched: not http(s), no host, or (with `allowed`) a
    host on a network the server does not fetch from."""
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"url must be an http:// or https:// URL with a host, got {url!r}")
    if allowed is not None:
        checked_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), allowed)
    return url


class _Guarded(httpcore.SyncBackend):
    def __init__(self, allowed: Sequence[Network]) -> None:
        self.allowed = allowed

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> Any:
        # TLS still verifies the name in the URL: httpcore passes the origin's host as SNI
        return super().connect_tcp(checked_address(host, port, self.allowed), port, timeout, local_address,
                                   socket_options)


def fetch(url: str, *, max_bytes: int, allowed: Sequence[Network] | None = (), timeout: float = 30,
          max_redirects: int = 5) -> tuple[bytes, str | None, str]:
    """GET `url` following redirects: (body, content type, final URL). A body over
    `max_bytes`, an error status or a network failure raises OSError; a refused address
    AddressRefused."""
    timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    backend = _Guarded(allowed) if allowed is not None else None
    with httpcore.ConnectionPool(ssl_context=ssl.create_default_context(), network_backend=backend) as pool:
        for _ in range(max_redirects + 1):
            check_url(url, allowed)
            headers = [(b"User-Agent", b"agentkeep"), (b"Accept", b"*/*")]
            try:
                with pool.stream("GET", url, headers=headers, extensions={"timeout": timeouts}) as response:
                    fields = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                    if response.status in REDIRECTS and "location" in fields:
                        url = urllib.parse.urljoin(url, fields["location"])
                        continue
                    if response.status >= 400:
                        reason = response.extensions.get("reason_phrase", b"").decode("latin-1")
                        raise OSError(f"GET {url} answered HTTP {response.status} {reason}".rstrip())
                    body = bytearray()
                    for part in response.iter_stream():
                        body += part
                        if len(body) > max_bytes:
                            raise OSError(f"GET {url}: the body is larger than {max_bytes} bytes")
                    return bytes(body), fields.get("content-type"), url
            except httpcore.ConnectError as exc:
                if isinstance(exc.__context__, AddressRefused):
                    raise exc.__context__ from None
                raise OSError(f"GET {url} failed: {exc or type(exc).__name__}") from None
            except httpcore.TimeoutException as exc:
                raise OSError(f"GET {url} timed out: {exc or type(exc).__name__}") from None
            except httpcore.NetworkError as exc:
                raise OSError(f"GET {url} failed: {exc or type(exc).__name__}") from None
    raise OSError(f"GET {url}: more than {max_redirects} redirects")
