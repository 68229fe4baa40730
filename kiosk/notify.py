"""The systemd notify protocol in a few lines: READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

Messages are datagrams to the socket named by ``NOTIFY_SOCKET`` (a path, or
an abstract socket when it starts with ``@``). Without that variable (not
started by systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


class SystemdNotifier:
    """Talks to systemd when started as a ``Type=notify`` service."""

    def __init__(self, environ: dict | None = None, clock=time.monotonic) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        self.watchdog_interval = int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0 else None
        self.clock = clock
        self._last_ping = float("-inf")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if self.address else None

    @property
    def enabled(self) -> bool:
        return self._socket is not None

    def send(self, message: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto(message.encode(), self.address)
        except OSError:
            pass  # systemd gone (shutdown): nothing to tell

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        """Ping the watchdog, at most every half watchdog period (every call when none is set)."""
        now = self.clock()
        interval = self.watchdog_interval if self.watchdog_interval is not None else 1.0
        if now - self._last_ping >= interval:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
