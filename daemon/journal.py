"""A write-ahead journal of received mentions, so a crash loses none of them.

The broker counts a QoS 1 message delivered once crisisd acknowledges it,
which it does once the message is journaled (``daemon.sources.mqtt``), and
the detectors' state is snapshotted only every few minutes. Without a
journal a ``kill -9`` would lose what arrived since the last snapshot. Each
batch is appended here (one ``write`` to an append-only file, which survives
the process being killed) just before it enters the windows; a snapshot
empties the journal; at start the daemon replays what the journal holds on
top of the snapshot it loaded, then goes live. A batch replayed that was
already counted before the crash is harmless: the windows count a mention
id once per bucket, and incidents and actions are idempotent in the store.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import msgspec
import structlog

from daemon.domain import Event, Mention, MetricPoint

log = structlog.get_logger("crisisd.journal")

_HEADER = struct.Struct("<I")
_Record = tuple[list[Mention], list[MetricPoint]]


class Journal:
    """Append-only, length-prefixed msgpack records of event batches."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._encode = msgspec.msgpack.Encoder().encode
        self.appended = 0

    def append(self, batch: list[Event]) -> None:
        """Record a batch before it is processed."""
        mentions = [e for e in batch if isinstance(e, Mention)]
        metrics = [e for e in batch if isinstance(e, MetricPoint)]
        body = self._encode((mentions, metrics))
        os.write(self._fd, _HEADER.pack(len(body)) + body)
        self.appended += 1

    def replay(self) -> Iterator[list[Event]]:
        """The batches recorded since the last reset, oldest first.

        A record cut short by the crash itself is the end of the journal.
        """
        decode = msgspec.msgpack.Decoder(_Record).decode
        data = self.path.read_bytes()
        offset = 0
        while offset + _HEADER.size <= len(data):
            (size,) = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + size
            if end > len(data):
                log.warning("journal ends in a partial record", bytes=len(data) - offset)
                break
            try:
                mentions, metrics = decode(data[offset + _HEADER.size : end])
            except msgspec.DecodeError as exc:
                log.warning("journal record unreadable; stopping there", error=str(exc))
                break
            yield [*mentions, *metrics]
            offset = end

    def reset(self) -> None:
        """Forget everything recorded: a snapshot now holds its effect."""
        os.ftruncate(self._fd, 0)
        self.appended = 0

    def close(self) -> None:
        """Close the file (its content stays for the next start)."""
        os.close(self._fd)
