"""Domain types that flow between the pipeline's stages.

Every stage takes and emits these and nothing else, so a stage can be tested
alone and live and replay sources are indistinguishable downstream. They are
plain data: no behaviour beyond small derived properties.

Times are event times in epoch seconds (float, UTC) throughout; conversion to
and from text happens only at the edges (decoding, rendering).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec


class Mention(msgspec.Struct, frozen=True):
    """One public post that mentions a brand, already validated and enriched.

    ``sentiment`` is in −1..1; ``None`` until the enrich stage scores it.
    """

    id: str
    ts: float
    brand: str
    channel: str
    text: str
    author: str = ""
    followers: int = 0
    sentiment: float | None = None
    lang: str = ""
    url: str = ""


class MetricPoint(msgspec.Struct, frozen=True):
    """A bucket aggregated upstream: the volume of one series in one interval.

    ``interval`` is the bucket length in seconds when the source knows it (a
    CSV file's own spacing); ``None`` means the series' configured length.
    """

    ts: float
    brand: str
    channel: str
    volume: int
    negative: int | None = None
    sentiment: float | None = None
    interval: float | None = None


Event = Mention | MetricPoint


class SeriesKey(NamedTuple):
    """One monitored series: a brand on a channel.

    A named tuple, not a dataclass: it keys every per-series dict on the hot
    path, and a tuple's hashing and equality run in C.
    """

    brand: str
    channel: str

    def __str__(self) -> str:
        return f"{self.brand}/{self.channel}" if self.channel else self.brand

    @property
    def slug(self) -> str:
        """A file-name-safe name: the brand alone for single-series files (CSV)."""
        return f"{self.brand}@{self.channel}" if self.channel else self.brand


@dataclass(slots=True)
class Sample:
    """A mention kept as evidence (the highest-reach ones of a bucket)."""

    id: str
    ts: float
    author: str
    followers: int
    text: str
    sentiment: float
    url: str = ""


@dataclass(slots=True)
class Bucket:
    """One closed event-time window of one series.

    Silence is data: a window without mentions is emitted with volume 0.
    ``aggregated`` marks a series fed by upstream metrics rather than
    mentions (no terms, reach or samples); ``negative_known`` is false when
    such metrics carry no negative count.
    ``sentiment_n`` counts the mentions that carry a sentiment, so the mean is
    defined even when upstream metrics give volume without sentiment.
    ``stamps`` are the upstream points' own timestamps (metric series only;
    ``None`` when none came): a score file lines up one row per upstream row,
    which a bucket of a series with gaps or jittered timestamps does not.
    """

    series: SeriesKey
    start: float
    end: float
    volume: int = 0
    negative: int = 0
    positive: int = 0
    sentiment_sum: float = 0.0
    sentiment_n: int = 0
    reach: int = 0
    max_negative_followers: int = 0
    terms: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    aggregated: bool = False
    negative_known: bool = True
    stamps: list[float] | None = None

    @property
    def negative_share(self) -> float:
        """Share of negative mentions (0 when the bucket is empty)."""
        return self.negative / self.volume if self.volume else 0.0

    @property
    def mean_sentiment(self) -> float:
        """Mean sentiment of the scored mentions (0 when none)."""
        return self.sentiment_sum / self.sentiment_n if self.sentiment_n else 0.0


class Severity(enum.IntEnum):
    """How bad an anomaly or incident is; ordered so ``max`` raises it."""

    LOW = 1
    HIGH = 2
    CRITICAL = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Read a severity from configuration (``low``, ``high``, ``critical``)."""
        return cls[text.upper()]


@dataclass(slots=True)
class Anomaly:
    """A bucket whose signal the detector finds improbable under its baseline.

    ``score`` is calibrated: ``1 − p`` with ``p`` the tail probability of the
    observation under the learned normal model, so one threshold serves all
    series. ``low``/``high`` bound the normal band at the alert threshold.
    ``direction`` is ``+1`` above the baseline, ``−1`` below; ``tone`` says
    whether the bucket reads ``negative``, ``positive`` or ``neutral`` so a
    launch spike can be told from a crisis. ``share`` is this signal's part
    of the bucket's total surprise (−log p summed over the signals that
    fired); ``category`` is the crisis-lexicon category of a term signal.
    ``window`` is how many seconds ``observed`` was pooled over when the
    detector judged the last half hour or hours rather than the bucket (0:
    the bucket itself), and the band is then that pooled value's.
    """

    series: SeriesKey
    signal: str
    start: float
    end: float
    observed: float
    expected: float
    low: float
    high: float
    score: float
    severity: Severity
    direction: int
    tone: str
    share: float = 1.0
    category: str | None = None
    top_terms: list[tuple[str, int]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    volume: int = 0
    negative_share: float = 0.0
    window: float = 0.0


class IncidentStatus(enum.StrEnum):
    """Lifecycle of an incident: open → acknowledged → resolved."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(slots=True)
class TimelineEntry:
    """One line of an incident's audit log."""

    ts: float
    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Incident:
    """One crisis of one brand, from the first anomaly to its resolution.

    ``key`` is the dedup key (brand and playbook): while an incident with a
    key is open, further anomalies of that key enrich it instead of opening
    another. ``origin`` is the series where the first anomaly was seen; the
    holding statement is posted there.
    """

    id: str
    key: str
    brand: str
    origin: SeriesKey
    opened_at: float
    severity: Severity
    status: IncidentStatus = IncidentStatus.OPEN
    playbook: str = ""
    signals: set[str] = field(default_factory=set)
    anomalies: list[Anomaly] = field(default_factory=list)
    last_anomaly_at: float = 0.0
    resolved_at: float | None = None
    roles: dict[str, str] = field(default_factory=dict)
    timeline: list[TimelineEntry] = field(default_factory=list)

    @property
    def first(self) -> Anomaly:
        """The anomaly that opened the incident."""
        return self.anomalies[0]


class IncidentChange(enum.StrEnum):
    """What happened to an incident; the incident stage emits one per change."""

    OPENED = "opened"
    UPDATED = "updated"
    SEVERITY_RAISED = "severity_raised"
    PLAYBOOK_SWITCHED = "playbook_switched"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(slots=True)
class IncidentEvent:
    """An incident change, the input of the playbook stage and the timeline."""

    change: IncidentChange
    at: float
    incident: Incident
    anomaly: Anomaly | None = None
