"""The MQTT payload contract: bytes from the broker in, validated events out.

Topics are ``{prefix}/mentions/{brand}/{channel}`` and
``{prefix}/metrics/{brand}/{channel}``; the series comes from the topic. A
message is one JSON object or a JSON array of them (a batch). The contract
(README, "MQTT contract") is enforced here and nowhere else, so the live
source and the replay source accept exactly the same data.

Publishers are other teams' tools and the public internet is behind them, so
nothing in a payload may stop the daemon: ``Decoder.decode`` never raises. A
bad payload (or a bad item of a batch) is counted under one reason, logged at
most once per reason every ten seconds, and skipped; the valid items around
it are kept. The reasons are the ones operators see in metrics:

``too_large``      payload larger than ``mqtt.max_payload`` (not parsed at all)
``bad_json``       not JSON (malformed, truncated, invalid UTF-8)
``not_object``     the payload or a batch item is not a JSON object
``missing_field``  a required field is absent (``id``, ``ts``, ``text``; ``volume``)
``wrong_type``     a field has the wrong JSON type (``true`` where a number goes…)
``out_of_range``   followers < 0, sentiment outside −1..1, negative > volume…
``bad_timestamp``  ``ts`` is not RFC 3339 with an offset nor epoch seconds in
                   1970..9999 (epoch milliseconds land here); also a ``ts`` of
                   the wrong JSON type: one field, one reason
``bad_topic``      not ``{prefix}/{mentions|metrics}/{brand}/{channel}`` with a
                   non-empty brand and channel (``+`` matches an empty level);
                   for replay records, an empty or ``/``-containing brand/channel

Speed: the common case (every item valid) is one ``msgspec`` decode of the
whole payload into typed structs plus one ``Mention`` construction per item.
Only when that fails does the decoder fall back to item-by-item decoding to
find which items are bad and why, so errors cost more and valid traffic
doesn't pay for them.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
import structlog
from msgspec import Meta

from daemon.domain import Event, Mention, MetricPoint

log = structlog.get_logger(__name__)

TOO_LARGE = "too_large"
BAD_JSON = "bad_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
OUT_OF_RANGE = "out_of_range"
BAD_TIMESTAMP = "bad_timestamp"
BAD_TOPIC = "bad_topic"
REASONS = (
    TOO_LARGE,
    BAD_JSON,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    OUT_OF_RANGE,
    BAD_TIMESTAMP,
    BAD_TOPIC,
)

MENTIONS = "mentions"
METRICS = "metrics"

#: Epoch seconds accepted for ``ts``: 1970-01-01 up to the end of year 9999,
#: the range an RFC 3339 timestamp can express. Epoch *milliseconds* of any
#: date after 1973 fall outside, so that common publisher bug is caught.
MIN_TS = 0.0
MAX_TS = 253402300800.0

#: Seconds between two log lines for the same reason; the rest are counted.
LOG_INTERVAL = 10.0

_TOPIC_CACHE_MAX = 4096
_SAMPLE_BYTES = 120

_Ts = float | Annotated[datetime, Meta(tz=True)]
_Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]
_Score = Annotated[float, Meta(ge=-1.0, le=1.0)]


class _MentionIn(msgspec.Struct, gc=False):
    """A mention as published: permissive only where the contract is."""

    id: str
    ts: _Ts
    text: str
    author: str = ""
    followers: _Count = 0
    sentiment: _Score | None = None
    lang: str = ""
    url: str = ""


class _MetricIn(msgspec.Struct, gc=False):
    """A pre-aggregated bucket as published."""

    ts: _Ts
    volume: _Count
    negative: _Count | None = None
    sentiment: _Score | None = None


class _MentionRecord(_MentionIn, kw_only=True, gc=False):
    """A replay line: a mention plus the series it belongs to."""

    brand: str
    channel: str


class _MetricRecord(_MetricIn, kw_only=True, gc=False):
    """A replay line: a metric bucket plus its series."""

    brand: str
    channel: str


class _Invalid(Exception):
    """An item broke the contract; carries the reason and a short detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected payload, kept raw so the dead-letter topic shows what came in.

    ``reason`` is that of the first bad item; ``rejected`` counts the bad items
    of the payload (a batch may hold several, next to valid ones).
    """

    topic: str
    payload: bytes
    reason: str
    rejected: int


def _seconds(ts: float | datetime) -> float:
    """Epoch seconds of a decoded ``ts``, or ``_Invalid(bad_timestamp)``."""
    if ts.__class__ is not float:
        try:
            ts = ts.timestamp()  # type: ignore[union-attr]
        except (OverflowError, ValueError, OSError) as exc:
            raise _Invalid(BAD_TIMESTAMP, f"ts out of range: {exc}") from None
    if not MIN_TS <= ts < MAX_TS:  # also false for NaN
        raise _Invalid(BAD_TIMESTAMP, f"ts {ts!r} is not epoch seconds in 1970..9999")
    return ts  # type: ignore[return-value]


def _classify(exc: msgspec.ValidationError) -> str:
    """Map msgspec's validation message to one of the contract's reasons.

    msgspec reports the first problem in document order as ``<what> - at
    `$[i].field```; the field tells ``ts`` problems apart, the wording the rest.
    """
    text, _, where = str(exc).partition(" - at `")
    field = where.rstrip("`").rpartition(".")[2] if "." in where else ""
    if text.startswith("Object missing required field"):
        return MISSING_FIELD
    if field == "ts":
        return BAD_TIMESTAMP
    if text.startswith("Expected `object`") and not field:
        return NOT_OBJECT
    if ">=" in text or "<=" in text or text.startswith("Number out of range"):
        return OUT_OF_RANGE
    return WRONG_TYPE


_NOT_A_LEVEL = re.compile(r"[/+#]")


def is_series_name(name: str) -> bool:
    """Whether ``name`` can be a brand or channel: a topic level (not empty, no ``/``, wildcards).

    The one rule for every source: MQTT topics, replay records and CSV file names.
    """
    return bool(name) and _NOT_A_LEVEL.search(name) is None


def _check_series(brand: str, channel: str) -> None:
    """Reject series names that cannot be a topic level (empty, ``/``, wildcards)."""
    if not (is_series_name(brand) and is_series_name(channel)):
        raise _Invalid(BAD_TOPIC, f"bad brand/channel {brand!r}/{channel!r}")


def _mention(m: _MentionIn, brand: str, channel: str) -> Mention:
    return Mention(
        m.id,
        _seconds(m.ts),
        brand,
        channel,
        m.text,
        m.author,
        m.followers,
        m.sentiment,
        m.lang,
        m.url,
    )


def _metric(m: _MetricIn, brand: str, channel: str) -> MetricPoint:
    if m.negative is not None and m.negative > m.volume:
        raise _Invalid(OUT_OF_RANGE, f"negative {m.negative} > volume {m.volume}")
    return MetricPoint(_seconds(m.ts), brand, channel, m.volume, m.negative, m.sentiment)


class Decoder:
    """Validates payloads against the MQTT contract and counts what it rejects.

    One instance per source; not thread-safe (the daemon is one event loop).
    ``valid`` counts accepted items by kind (``mentions``, ``metrics``),
    ``invalid`` rejected ones by reason, ``items`` every item seen, so
    ``items == valid.total() + invalid.total()`` always holds. A payload
    rejected as a whole (too large, not JSON, bad topic) is one item.

    With ``keep_deadletters`` the raw payloads that held a rejected item are
    kept until ``take_deadletters()``; the MQTT source republishes them to
    ``deadletter_topic``. With ``max_ahead`` (live) an MQTT item stamped more
    than that many seconds past this host's clock is rejected
    (``bad_timestamp``): taken in, it would move event time on, and close
    every series' buckets, ahead of the rest of the stream.
    """

    def __init__(
        self,
        prefix: str = "crisisd",
        max_payload: int = 256 * 1024,
        *,
        keep_deadletters: bool = False,
        log_interval: float = LOG_INTERVAL,
        max_ahead: float | None = None,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.max_ahead = max_ahead
        self.max_payload = max_payload
        self.keep_deadletters = keep_deadletters
        self.log_interval = log_interval
        self.valid: Counter[str] = Counter()
        self.invalid: Counter[str] = Counter()
        self.items = 0
        self.errors = 0  # internal errors (bugs), counted under wrong_type too
        self._deadletters: list[DeadLetter] = []
        self._topics: dict[str, tuple[str, str, str] | None] = {}
        self._logged: dict[str, list[float]] = {}  # reason -> [last log time, suppressed]
        self._mention_batch = msgspec.json.Decoder(_MentionIn | list[_MentionIn])
        self._metric_batch = msgspec.json.Decoder(_MetricIn | list[_MetricIn])
        self._items = msgspec.json.Decoder(list[msgspec.Raw])
        self._one = {
            MENTIONS: msgspec.json.Decoder(_MentionIn),
            METRICS: msgspec.json.Decoder(_MetricIn),
        }
        self._build = {MENTIONS: _mention, METRICS: _metric}

    @property
    def deadletter_topic(self) -> str:
        """Where rejected payloads are republished when dead-lettering is on."""
        return f"{self.prefix}/deadletter"

    def take_deadletters(self) -> list[DeadLetter]:
        """Hand over (and forget) the rejected payloads kept since the last call."""
        out, self._deadletters = self._deadletters, []
        return out

    # -- MQTT payloads -----------------------------------------------------

    def decode(self, topic: str, payload: bytes) -> list[Event]:
        """Validated events of one MQTT message; never raises.

        Rejected items are counted, logged (rate-limited) and left out; a batch
        keeps its valid items whatever their neighbours hold.
        """
        try:
            return self._decode(topic, payload)
        except Exception as exc:  # a bug here must not stop the daemon
            self.errors += 1
            self._reject(WRONG_TYPE, f"decoder error: {exc!r}", topic, payload)
            return []

    def _decode(self, topic: str, payload: bytes) -> list[Event]:
        series = self._topics.get(topic, False)
        if series is False:
            series = self._parse_topic(topic)
        if series is None:
            self._reject(
                BAD_TOPIC, "expected {prefix}/{mentions|metrics}/{brand}/{channel}", topic, payload
            )
            return []
        if len(payload) > self.max_payload:
            self._reject(TOO_LARGE, f"{len(payload)} bytes > {self.max_payload}", topic, payload)
            return []
        kind, brand, channel = series
        decoder = self._mention_batch if kind is MENTIONS else self._metric_batch
        try:
            decoded = decoder.decode(payload)
        except msgspec.ValidationError:
            return self._decode_items(kind, brand, channel, topic, payload)
        except UnicodeDecodeError:
            return self._decode_items(kind, brand, channel, topic, payload)
        except msgspec.DecodeError as exc:
            self._reject(BAD_JSON, str(exc), topic, payload)
            return []
        build = self._build[kind]
        if not isinstance(decoded, list):
            decoded = [decoded]
        out: list[Event] = []
        rejected = 0
        first = ""
        limit = self._limit()
        for item in decoded:
            try:
                out.append(self._in_time(build(item, brand, channel), limit))
            except _Invalid as exc:
                rejected += 1
                first = first or exc.reason
                self._reject(exc.reason, exc.detail, topic, payload, keep=False)
        self.items += len(decoded)
        self.valid[kind] += len(out)
        if rejected and self.keep_deadletters:
            self._deadletters.append(DeadLetter(topic, payload, first, rejected))
        return out

    def _decode_items(
        self, kind: str, brand: str, channel: str, topic: str, payload: bytes
    ) -> list[Event]:
        """Slow path: find, item by item, which items are bad and why."""
        if payload.lstrip()[:1] == b"[":
            try:
                raws: list[Any] = self._items.decode(payload)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                self._reject(BAD_JSON, str(exc), topic, payload)
                return []
        else:
            raws = [payload]
        one = self._one[kind]
        build = self._build[kind]
        out: list[Event] = []
        rejected = 0
        first = ""
        limit = self._limit()
        for raw in raws:
            try:
                try:
                    item = one.decode(raw)
                except msgspec.ValidationError as exc:
                    raise _Invalid(_classify(exc), str(exc)) from None
                except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                    raise _Invalid(BAD_JSON, str(exc)) from None
                out.append(self._in_time(build(item, brand, channel), limit))
            except _Invalid as exc:
                rejected += 1
                first = first or exc.reason
                self._reject(exc.reason, exc.detail, topic, bytes(raw), keep=False)
        self.items += len(raws)
        self.valid[kind] += len(out)
        if rejected and self.keep_deadletters:
            self._deadletters.append(DeadLetter(topic, payload, first, rejected))
        return out

    def _limit(self) -> float:
        """The latest ``ts`` accepted now (``max_ahead`` past the clock; none in replay)."""
        return math.inf if self.max_ahead is None else time.time() + self.max_ahead

    def _in_time(self, event: Event, limit: float) -> Event:
        """``event``, unless it is stamped past ``limit``."""
        if event.ts > limit:
            ahead = event.ts - limit + (self.max_ahead or 0.0)
            raise _Invalid(BAD_TIMESTAMP, f"ts {event.ts!r} is {ahead:,.0f} s ahead of this "
                           "host's clock: fix the producer's clock or time zone")
        return event

    def _parse_topic(self, topic: str) -> tuple[str, str, str] | None:
        """``(kind, brand, channel)`` of a topic, or ``None``; cached per topic."""
        series: tuple[str, str, str] | None = None
        head, sep, rest = topic.partition(self.prefix + "/")
        if not head and sep:
            parts = rest.split("/")
            if len(parts) == 3 and parts[0] in (MENTIONS, METRICS):
                kind = MENTIONS if parts[0] == MENTIONS else METRICS
                try:
                    _check_series(parts[1], parts[2])
                    series = (kind, parts[1], parts[2])
                except _Invalid:
                    series = None
        if len(self._topics) >= _TOPIC_CACHE_MAX:
            self._topics.clear()
        self._topics[topic] = series
        return series

    # -- replay records ----------------------------------------------------

    def decode_record(self, obj: Any) -> Event | None:
        """One replay record (a mention or metric object with ``brand`` and
        ``channel`` fields) as an event, or ``None`` when it breaks the contract.

        Same validation, reasons and counters as ``decode``; an object with a
        ``volume`` field is a metric, anything else a mention. Never raises.
        """
        try:
            self.items += 1
            if not isinstance(obj, dict):
                raise _Invalid(NOT_OBJECT, f"expected an object, got {type(obj).__name__}")
            if "volume" in obj:
                kind, struct = METRICS, _MetricRecord
            else:
                kind, struct = MENTIONS, _MentionRecord
            try:
                rec = msgspec.convert(obj, struct)
            except msgspec.ValidationError as exc:
                raise _Invalid(_classify(exc), str(exc)) from None
            _check_series(rec.brand, rec.channel)
            event = self._build[kind](rec, rec.brand, rec.channel)
        except _Invalid as exc:
            self._reject(exc.reason, exc.detail, "<record>", repr(obj).encode(), keep=False)
            return None
        except Exception as exc:  # never stop a replay on one odd line
            self.errors += 1
            self._reject(WRONG_TYPE, f"decoder error: {exc!r}", "<record>", b"", keep=False)
            return None
        self.valid[kind] += 1
        return event

    def decode_line(self, line: bytes) -> Event | None:
        """One JSON line of a replay file (see ``decode_record``); never raises."""
        try:
            obj = msgspec.json.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            self.items += 1
            self._reject(BAD_JSON, str(exc), "<record>", line, keep=False)
            return None
        return self.decode_record(obj)

    def count_row(self, reason: str | None, detail: str = "", sample: bytes = b"") -> None:
        """Count one row of a replay file that is not JSON (a CSV row), valid if no ``reason``.

        Such rows are checked by their reader; counting them here keeps one
        tally, and one rate-limited log, of everything a replay rejected.
        """
        self.items += 1
        if reason is None:
            self.valid["metric"] += 1
        else:
            self._reject(reason, detail, "<row>", sample, keep=False)

    # -- bookkeeping -------------------------------------------------------

    def _reject(
        self, reason: str, detail: str, topic: str, payload: bytes, *, keep: bool = True
    ) -> None:
        """Count a rejected item; log it unless this reason logged recently.

        ``keep`` is for whole-payload rejections, which are one item each and
        go to the dead letters as they are; item rejections are counted by the
        caller, which keeps the payload once.
        """
        self.invalid[reason] += 1
        if keep:
            self.items += 1
            if self.keep_deadletters:
                self._deadletters.append(DeadLetter(topic, payload, reason, 1))
        now = time.monotonic()
        state = self._logged.get(reason)
        if state is not None and now - state[0] < self.log_interval:
            state[1] += 1
            return
        suppressed = int(state[1]) if state is not None else 0
        self._logged[reason] = [now, 0]
        log.warning(
            "payload_rejected",
            reason=reason,
            topic=topic,
            detail=detail[:200],
            sample=payload[:_SAMPLE_BYTES].decode("utf-8", "replace"),
            suppressed=suppressed,
        )


__all__ = [
    "MAX_TS",
    "MIN_TS",
    "REASONS",
    "DeadLetter",
    "Decoder",
]
