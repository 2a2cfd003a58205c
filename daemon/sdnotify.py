"""The systemd notification protocol (``sd_notify``), without libsystemd.

Under ``Type=notify`` systemd waits for ``READY=1`` before it calls the
service started, restarts it when ``WATCHDOG=1`` pings stop arriving, and
shows ``STATUS=`` in ``systemctl status``. The protocol is one datagram per
message to the unix socket named in ``$NOTIFY_SOCKET``; outside systemd the
variable is unset and every call is a cheap no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

log = structlog.get_logger("crisisd.sdnotify")


class Notifier:
    """Sends state changes to systemd (or nowhere, when not under systemd)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        if path.startswith("@"):
            path = "\0" + path[1:]  # abstract namespace socket
        self.address = path or None
        self.watchdog_usec = 0
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)

    @property
    def enabled(self) -> bool:
        """Whether a notification socket was given."""
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one datagram; ``False`` if it could not."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(fields).encode())
        except OSError as exc:
            log.warning("sd_notify failed", error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """The service is up (broker subscription live, state loaded)."""
        fields = ["READY=1", f"STATUS={status}"] if status else ["READY=1"]
        return self.send(*fields)

    def reloading(self) -> bool:
        """A reload started; ``ready()`` ends it."""
        return self.send("RELOADING=1")

    def stopping(self) -> bool:
        """A clean shutdown started."""
        return self.send("STOPPING=1", "STATUS=draining")

    def status(self, text: str) -> bool:
        """Free text shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    @property
    def watchdog_interval(self) -> float | None:
        """How often to ping: half the watchdog timeout, or ``None`` if off."""
        return self.watchdog_usec / 2e6 if self.watchdog_usec else None

    async def watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` from the event loop until cancelled.

        Pinging from the loop itself (not a thread) is the point: a hung loop
        stops the pings, and systemd restarts the service.
        """
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)
