"""A write-ahead journal of received mentions, so a crash loses none of them.

The broker counts a QoS 1 message delivered once crisisd acknowledges it,
which it does once the message is journaled (``daemon.sources.mqtt``), and
the detectors' state is snapshotted only every few minutes. Without a
journal a ``kill -9`` would lose what arrived since the last snapshot. Each
batch is appended here (one ``write`` to an append-only file, which survives
the process being killed) just before it enters the windows; a snapshot
drops from the journal what it holds; at start the daemon replays what the
journal still holds on top of the snapshot it loaded, then goes live. A batch replayed that was
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
        self._fd = self._open()
        self._encode = msgspec.msgpack.Encoder().encode
        self.size = os.fstat(self._fd).st_size  # bytes recorded: a position for forget_before

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def append(self, batch: list[Event]) -> None:
        """Record a batch before it is processed."""
        mentions = [e for e in batch if isinstance(e, Mention)]
        metrics = [e for e in batch if isinstance(e, MetricPoint)]
        body = self._encode((mentions, metrics))
        record = _HEADER.pack(len(body)) + body
        os.write(self._fd, record)
        self.size += len(record)

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
        self.size = 0

    def forget_before(self, position: int) -> None:
        """Forget the records before ``position`` (a ``size`` read earlier), keep the rest.

        A snapshot written in the background holds the batches recorded up
        to the moment it was taken, not those that arrived while it was
        being written: these move to a new file that replaces this one
        (a crash before the rename leaves the whole journal, whose replay
        on top of the new snapshot is harmless, as above).
        """
        if position >= self.size:
            self.reset()
            return
        with self.path.open("rb") as fh:
            fh.seek(position)
            rest = fh.read()
        fresh = self.path.with_suffix(".new")
        fresh.write_bytes(rest)
        os.replace(fresh, self.path)
        os.close(self._fd)
        self._fd = self._open()
        self.size = len(rest)

    def close(self) -> None:
        """Close the file (its content stays for the next start)."""
        os.close(self._fd)
