"""Connections that cannot exhaust the server: a header timeout and a cap that evicts idle ones.

uvicorn (0.54) times out a keep-alive connection only after a response, and any byte resets that
timer; a connection that sends nothing, or its headers one byte a minute, stays open for ever.
1,100 such connections used up the usual 1,024 file descriptors and the server stopped
answering. uvicorn's ``limit_concurrency`` does not help: it counts idle connections too and
answers the next real request 503.

So the h11 protocol is subclassed (its public hooks ``connection_made``, ``data_received``,
``on_response_complete``, ``connection_lost``) to add two things:

* **header timeout**: a connection must deliver a request's complete headers within
  ``header_timeout`` seconds of opening (or of its previous response), else it is closed;
* **connection cap**: at most ``max_connections`` open; a new one past the cap closes the
  connection idle the longest (no request in flight), else the one whose request body has gone
  longest without a byte (still uploading: 1,000 connections sending a body byte every 10 s
  locked every valid request out). Connections whose request is complete, being answered, are
  never evicted; only when every one is such is the new one refused. A valid request thus gets in
  however many idle or trickling sockets are open.

``max_connections`` is also kept under the process's open-file limit (``fd_budget``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .defaults import DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS, KEEP_ALIVE_TIMEOUT

log = logging.getLogger("nb_completion.server")


def raise_open_file_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - a platform that refuses
            pass
    return soft


def fd_budget(requested: int) -> int:
    """``requested``, but at most three quarters of the open-file limit (the rest is the
    process's own: model files, the kernel's sockets, the clients of a test in the same process)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(8, min(requested, soft * 3 // 4))


class ConnectionLimits:
    """The open connections of one server, oldest first, and the limits applied to them."""

    def __init__(self, max_connections: int = DEFAULT_MAX_CONNECTIONS, header_timeout: float = DEFAULT_HEADER_TIMEOUT):
        self.max_connections = fd_budget(max_connections)
        self.header_timeout = header_timeout
        self.open: "OrderedDict[GuardedH11Protocol, None]" = OrderedDict()
        self.evicted = 0
        self.evicted_uploading = 0  # of ``evicted``: connections still sending a request body
        self.timed_out = 0
        self.refused = 0

    def admit(self, protocol: "GuardedH11Protocol") -> bool:
        """Register a new connection, evicting the longest-idle one past the cap; False if all
        are busy (the new one is then closed)."""
        if len(self.open) >= self.max_connections:
            victim = next((p for p in self.open if p.idle()), None)
            if victim is None:  # the one uploading a body with the oldest last byte
                victim = next((p for p in self.open if p.receiving_body()), None)
                if victim is not None:
                    self.evicted_uploading += 1
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            self.open.pop(victim)  # now, not when its close completes: the next admit picks another
            victim.close()
        self.open[protocol] = None
        return True

    def touch(self, protocol: "GuardedH11Protocol") -> None:
        if protocol in self.open:
            self.open.move_to_end(protocol)

    def discard(self, protocol: "GuardedH11Protocol") -> None:
        self.open.pop(protocol, None)

    def status(self) -> dict:
        return {
            "open": len(self.open),
            "max": self.max_connections,
            "evicted_idle": self.evicted - self.evicted_uploading,
            "evicted_uploading": self.evicted_uploading,
            "timed_out": self.timed_out,
            "refused": self.refused,
        }


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the header timeout and the connection cap (see the module)."""

    limits: ConnectionLimits  # set on the subclass ``protocol_class`` makes

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        if not self.limits.admit(self):
            self.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.idle():  # a request in flight: this connection's last byte is now (the cap's order)
            self._disarm()  # a request's headers are complete: the app and its own timeouts take over
            self.limits.touch(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.limits.touch(self)
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.limits.discard(self)
        super().connection_lost(exc)

    # ---- helpers -----------------------------------------------------------------------------

    def idle(self) -> bool:
        """No request in flight: waiting for (the rest of) a request's headers."""
        return self.cycle is None or self.cycle.response_complete or self.transport.is_closing()

    def receiving_body(self) -> bool:
        """A request whose body is still arriving and whose answer has not begun."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_started and not self.transport.is_closing()

    def close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._on_header_timeout)

    def _disarm(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _on_header_timeout(self) -> None:
        self._header_timer = None
        if self.idle():
            self.limits.timed_out += 1
            self.close()


def protocol_class(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class bound to ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("ServerH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def uvicorn_options(limits: ConnectionLimits) -> dict[str, Any]:
    return {"http": protocol_class(limits), "timeout_keep_alive": KEEP_ALIVE_TIMEOUT}
