"""Who may talk to the server: the ``Host`` allow-list, the ``Origin`` check, CORS (off by default).

A local HTTP server is reachable from every web page the user opens. Two attacks, and Jupyter
Server's defences against them (``JupyterHandler.check_host`` / ``check_origin``), which these
follow:

* **DNS rebinding**: a page on ``evil.example`` re-points its name at 127.0.0.1 and then talks to
  the server as if same-origin. Its requests carry ``Host: evil.example``, so only the names this
  server answers to are served: ``localhost``, loopback addresses, the bound host, and the names
  given with ``--allowed-host`` (``.example.com`` matches subdomains, ``*`` anything). When bound
  to every interface (0.0.0.0 / ::) any IP address is accepted too: a client on the network
  addresses the machine by one, and an IP literal cannot be rebound. Others get 421.
* **Cross-site requests**: a browser marks them with ``Origin``. One whose origin is neither the
  server's own nor in ``--cors-origin`` gets 403. With ``--cors-origin`` the listed origins get
  CORS headers (Starlette's ``CORSMiddleware``); without, no CORS header is ever sent. (A page
  can still send a "simple" cross-origin POST without asking, but only as ``text/plain`` or a
  form: the routes take ``application/json`` only, see ``body.py``.)

Requests without ``Host`` or ``Origin`` (curl, SDKs) are not browser requests and pass.

A request with both ``Content-Length`` and ``Transfer-Encoding`` is a 400 and its connection is
closed (RFC 9112, 6.3: such a message "ought to be handled as an error", and the connection
closed after responding): the two framings disagree about where the body ends, which is how a
second, smuggled request hides inside the first one's body.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..api.errors import CompletionError, shorten
from .responses import error_response

LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
_HOST_PORT = re.compile(r"^(.*?)(:\d*)?$")


def host_name(host: str) -> str:
    """``Host`` without its port and IPv6 brackets, lower-cased, without a trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    match = _HOST_PORT.match(host)
    return (match.group(1) if match else host).rstrip(".")


class HostPolicy:
    """Which ``Host`` and ``Origin`` values a server bound to ``bound_host`` accepts."""

    def __init__(self, bound_host: str = "127.0.0.1", allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()):
        self.bound = host_name(bound_host)
        self.any_address = self.bound in WILDCARD_ADDRESSES
        self.allowed = {host_name(h) if h != "*" else "*" for h in allowed_hosts}
        self.suffixes = tuple(h for h in self.allowed if h.startswith("."))
        self.cors_origins = tuple(o.rstrip("/") for o in cors_origins)

    def host_allowed(self, host: str) -> bool:
        name = host_name(host)
        if "*" in self.allowed or name in self.allowed or name == self.bound or name in LOOPBACK_NAMES:
            return True
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            return name.endswith(".localhost") or any(name.endswith(s) for s in self.suffixes)
        return address.is_loopback or self.any_address

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.rstrip("/")
        if "*" in self.cors_origins or origin in self.cors_origins:
            return True
        if host is None:
            return False
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.strip().lower()


class GuardMiddleware:
    """ASGI middleware applying a ``HostPolicy`` to every HTTP request (health and docs too)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy):
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        origin = headers.get("origin")
        error = None
        if "content-length" in headers and "transfer-encoding" in headers:
            error = CompletionError(
                400,
                "a request must not carry both Content-Length and Transfer-Encoding (RFC 9112); the connection is closed",
            )
            error.close_connection = True  # type: ignore[attr-defined]
        elif host is not None and not self.policy.host_allowed(host):
            error = CompletionError(
                421,
                f"this server does not answer to the host '{shorten(host, 100)}' "
                "(a DNS-rebinding guard; the server's operator can add it with --allowed-host)",
            )
        elif origin is not None and not self.policy.origin_allowed(origin, host):
            error = CompletionError(
                403,
                f"cross-origin requests from '{shorten(origin, 100)}' are not allowed "
                "(the server's operator can allow an origin with --cors-origin)",
            )
        if error is not None:
            await error_response(error)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def middleware(policy: HostPolicy) -> list:
    """Starlette's middleware list: the guard outermost, then CORS for the configured origins."""
    from starlette.middleware import Middleware

    stack = [Middleware(GuardMiddleware, policy=policy)]
    if policy.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(policy.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
                max_age=600,
            )
        )
    return stack
