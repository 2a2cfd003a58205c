"""The detect stage: closed buckets in, explained anomalies out.

Each series gets a slot in one detector bank per enabled signal
(``detectors.registry``) on its first bucket. For every tick each bank scores
the new values against their baselines *before* learning them, so the spike is
judged by the past, not by itself. An anomaly is raised only once a detector
is warm and its calibrated score crosses the configured threshold.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
import structlog

from daemon.config import DetectionConfig
from daemon.domain import Anomaly, Bucket, SeriesKey, Severity
from detectors import registry
from detectors.base import Band, Detector, FloatArray, Slots
from detectors.terms import TermDetector
from detectors.volume import SeasonalCountDetector

log = structlog.get_logger("crisisd.detect")

ELEVATED = 0.9999
"""Score above which a signal is not yet back to normal (p < 1e-4; for counts at
buckets coarser than five minutes, spent per period as ``registry.threshold_at`` does).

Incidents resolve after a quiet period "back to normal": a storm that goes
on at scores under the alert threshold keeps its incident open."""

_B = TypeVar("_B", Detector, TermDetector)

ScoreSink = Callable[[SeriesKey, str, Bucket, float, float, bool], None]
"""Receives (series, signal, bucket, value, score, alert) for every scored bucket."""


def signals_for(bucket: Bucket, enabled: list[str]) -> list[str]:
    """The scalar signals a series can carry, given what its source provides."""
    out = []
    for signal in enabled:
        if signal == "terms":
            continue
        if bucket.aggregated and signal == "reach":
            continue
        negative = signal in ("negative_share", "negative_volume")
        if bucket.aggregated and negative and not bucket.negative_known:
            continue
        if bucket.aggregated and signal == "sentiment" and not bucket.sentiment_n:
            continue
        out.append(signal)
    return out


#: Signals that are negative by what they measure, whatever the rest of the bucket says:
#: the biggest negative audience, the negatives' count and share, and sentiment (this
#: detector alerts only on a fall). A big account's complaint in a bucket of praise is
#: still a complaint.
NEGATIVE_SIGNALS = frozenset({"reach", "negative_volume", "negative_share", "sentiment"})


def _finite(x: FloatArray) -> list[float | None]:
    """Bands' values for JSON: rounded, None where the model has none (infinite)."""
    return [v if math.isfinite(v) else None for v in np.round(x, 4).tolist()]


LOGGED_NAMES = 5
"""Series named in one log line about many (``crisisd series`` lists them all)."""


def _named(names: list[str]) -> dict[str, Any]:
    """Log fields for the series a line is about: how many, and the first few by name.

    A cold start of 10,000 series logged 10,000 "warming up" lines, and
    50,000 "baseline ready" lines a day later; one line per tick says the
    same to whoever reads the journal.
    """
    fields: dict[str, Any] = {"series": names[:LOGGED_NAMES]}
    if len(names) > LOGGED_NAMES:
        fields["series_count"] = len(names)
    return fields


def _states(bank: Detector, t: float, p: float, slots: Slots) -> list[dict[str, Any]]:
    """Whether each slot is warm, and its band at tail probability ``p`` (``GET /series``)."""
    band = bank.bands(t, p, slots)
    return [{"warm": w, "expected": e, "low": lo, "high": hi} for w, e, lo, hi in zip(
        bank.is_warm(slots).tolist(), _finite(band.expected), _finite(band.low),
        _finite(band.high), strict=True)]


def tone(bucket: Bucket) -> str:
    """How the bucket reads: ``negative``, ``positive`` or ``neutral``.

    Volume and term anomalies take this tone (a launch's spike reads
    positive); the signals in :data:`NEGATIVE_SIGNALS` are negative anyway.
    """
    if not bucket.sentiment_n:
        return "neutral"
    if bucket.negative and bucket.negative >= bucket.positive:
        return "negative"
    if bucket.positive >= 2 * bucket.negative and bucket.mean_sentiment >= 0.05:
        return "positive"
    return "neutral"


class _Columns:
    """A tick's bucket fields as arrays, each built on first use (one pass over the buckets).

    Lazily, because a tick of upstream metrics (NAB, aggregates) feeds only
    volume: building every column would cost more than scoring it.
    """

    def __init__(self, buckets: list[Bucket]) -> None:
        self.buckets = buckets
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        arr = self._cache.get(name)
        if arr is None:
            arr = self._cache[name] = self._build(name)
        return arr

    def _build(self, name: str) -> np.ndarray:
        if name == "mean_sentiment":
            return self["sentiment_sum"] / np.maximum(self["sentiment_n"], 1.0)
        if name == "negative_share":
            return self["negative"] / np.maximum(self["volume"], 1.0)
        if name == "ones":
            return np.ones(len(self.buckets))
        return np.fromiter((getattr(b, name) for b in self.buckets), float, len(self.buckets))


def _feed(signal: str, col: _Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, n, shown value) a signal's detector is fed from the bucket columns."""
    if signal == "volume":
        return col["volume"], col["ones"], col["volume"]
    if signal == "negative_share":
        return col["negative"], col["volume"], col["negative_share"]
    if signal == "negative_volume":
        # n = volume lets the detector see a launch that doubles everything,
        # complaints included, as no rise in negativity.
        return col["negative"], col["volume"], col["negative"]
    if signal == "sentiment":
        return col["mean_sentiment"], col["sentiment_n"], col["mean_sentiment"]
    if signal == "reach":
        m = col["max_negative_followers"]
        return m, col["ones"], m
    raise ValueError(f"unknown signal {signal!r}")


class _Fired(NamedTuple):
    """A signal (or term) of one bucket that crossed the threshold.

    ``band`` is the normal band at the alert threshold as the baseline stood
    *before* it learnt this bucket: after, a record detector's record is the
    alert itself ("expected 5,000,000").
    """

    signal: str
    shown: float
    score: float
    band: Band
    category: str | None = None


@dataclass(slots=True)
class _Series:
    """One series' place in its cadence's banks."""

    slots: dict[str, int]  # signal -> slot in that signal's bank
    term_slot: int | None


@dataclass(slots=True)
class _Plan:
    """Which buckets of a tick feed which bank slots (reused while the series set holds)."""

    keys: list[SeriesKey]
    rows: dict[str, tuple[np.ndarray | None, np.ndarray]]  # signal -> (positions, slots)
    terms: tuple[np.ndarray | None, np.ndarray] | None


@dataclass(slots=True)
class Cadence:
    """Every series of one bucket length: one detector bank per signal. Pickled into snapshots."""

    length: float
    banks: dict[str, Detector] = field(default_factory=dict)
    terms: TermDetector | None = None
    series: dict[SeriesKey, _Series] = field(default_factory=dict)
    ready: dict[str, np.ndarray] = field(default_factory=dict)  # signal -> warm flags logged
    plan: _Plan | None = None


class DetectStage:
    """Scores every closed bucket on every enabled signal of its series.

    Series are grouped by bucket length (a *cadence*); each cadence holds one
    bank per signal, so a tick of thousands of series costs one vectorised
    score and learn per signal (see :mod:`detectors.base`).
    """

    def __init__(
        self,
        cfg: DetectionConfig,
        evidence_terms: int = 10,
        on_score: ScoreSink | None = None,
    ) -> None:
        self.cfg = cfg
        self.threshold = cfg.threshold or registry.threshold_for(cfg.sensitivity)
        self.evidence_terms = evidence_terms
        self.on_score = on_score
        self.cadences: dict[float, Cadence] = {}

    @property
    def series_count(self) -> int:
        """Number of series watched."""
        return sum(len(c.series) for c in self.cadences.values())

    def _cadence(self, length: float) -> Cadence:
        cad = self.cadences.get(length)
        if cad is None:
            cad = self.cadences[length] = Cadence(length)
        return cad

    def watched(self, t: float, brand: str = "*") -> list[dict[str, Any]]:
        """Every series watched (of brands matching the glob ``brand``), each signal's state.

        Why: "is my brand watched yet, and what does crisisd take for normal
        right now?" is the first question after adding a brand or a channel,
        and after a restart. Per signal: whether its baseline is warm (it
        may alert), and its normal band at event time ``t`` at the alert
        threshold, the same band an anomaly's explanation shows; for terms,
        how many terms the series keeps.
        """
        out = []
        for length, cad in sorted(self.cadences.items()):
            rows = sorted(((key, state) for key, state in cad.series.items()
                           if fnmatch.fnmatchcase(key.brand, brand)), key=lambda kv: str(kv[0]))
            signals: list[dict[str, dict[str, Any]]] = [{} for _ in rows]
            for signal, bank in sorted(cad.banks.items()):
                at = [i for i, (_, state) in enumerate(rows) if signal in state.slots]
                slots = np.array([rows[i][1].slots[signal] for i in at], np.intp)
                p = 1.0 - registry.threshold_at(signal, self.threshold, length)
                for i, state in zip(at, _states(bank, t, p, slots), strict=True):
                    signals[i][signal] = state
            if cad.terms is not None:
                at = [i for i, (_, state) in enumerate(rows) if state.term_slot is not None]
                slots = np.array([rows[i][1].term_slot for i in at], np.intp)
                warm = cad.terms.is_warm(slots).tolist()
                for i, slot, w in zip(at, slots.tolist(), warm, strict=True):
                    signals[i]["terms"] = {"warm": w, "kept": cad.terms.n_terms(slot)}
            out.extend({"series": str(key), "brand": key.brand, "channel": key.channel,
                        "bucket": length, "signals": sig}
                       for (key, _), sig in zip(rows, signals, strict=True))
        return out

    def _bank(self, signal: str, length: float) -> Detector:
        """A new bank for ``signal`` at bucket ``length``, as the configuration asks."""
        return registry.make(signal, bucket=length, warmup=self.cfg.warmup,
                             min_volume=self.cfg.min_volume, threshold=self.threshold,
                             holidays=self.cfg.holidays)

    def _use_holidays(self, cad: Cadence, series: list[tuple[str, _Series]]) -> None:
        """Give the series' count slots the holidays of their brand's globs
        (``holidays_by_brand``) besides every brand's, at once per set of dates."""
        globs = self.cfg.holidays_by_brand
        by_dates: dict[tuple[dt.date, ...], dict[str, list[int]]] = {}
        for brand, state in series:
            dates = tuple(sorted({d for glob, ds in globs.items()
                                  if fnmatch.fnmatchcase(brand, glob) for d in ds}))
            slots = by_dates.setdefault(dates, {})
            for signal in registry.COUNTS & state.slots.keys():
                slots.setdefault(signal, []).append(state.slots[signal])
        for dates, slots in by_dates.items():
            for signal, at in slots.items():
                bank = cad.banks[signal]
                if isinstance(bank, SeasonalCountDetector):
                    bank.use_holidays(np.array(at, np.intp), dates)

    def _terms(self, length: float) -> TermDetector:
        """A new term detector at bucket ``length``, with the configured lexicon."""
        return TermDetector(bucket=length, warmup=self.cfg.warmup, lexicon=self.cfg.lexicon,
                            threshold=self.threshold)

    def restore(self, cadences: dict[float, Cadence]) -> list[str]:
        """Resume the cadences of a snapshot; the banks that start cold, as ``signal@bucket``.

        Each bank is built anew from the configuration and takes over the
        snapshot's learnt state (:meth:`detectors.base.Bank.take_state`), so
        settings changed since (sensitivity, warm-up, the floor, the
        lexicon) apply after a restart. A bank whose state no longer fits
        its detector (an upgrade changed it: :meth:`detectors.base.Bank.schema`)
        starts cold on its own, with a slot for each series it had; the
        other signals resume warm. Signals disabled since the snapshot are
        dropped; those enabled since join each series at its next bucket.
        """
        cold: list[str] = []
        enabled = set(self.cfg.signals)
        for length, cad in cadences.items():
            for signal in cad.banks.keys() - enabled:
                del cad.banks[signal]
                for state in cad.series.values():
                    state.slots.pop(signal, None)
            if "terms" not in enabled:
                cad.terms = None
                for state in cad.series.values():
                    state.term_slot = None
            for signal, old in cad.banks.items():
                cad.banks[signal] = self._resume(self._bank(signal, length), old, signal, cad,
                                                 cold)
            if cad.terms is not None:
                cad.terms = self._resume(self._terms(length), cad.terms, "terms", cad, cold)
            # (the snapshot's calendars were its configuration's: every slot gets this one's)
            self._use_holidays(cad, [(key.brand, st) for key, st in cad.series.items()])
            cad.ready = {s: r for s, r in cad.ready.items() if s in enabled}
            cad.plan = None
            self.cadences[length] = cad
        return cold

    @staticmethod
    def _resume(fresh: _B, old: _B, signal: str, cad: Cadence, cold: list[str]) -> _B:
        """``fresh`` with ``old``'s learnt state, or cold with as many slots if it does not fit."""
        if fresh.schema() == old.schema():
            fresh.take_state(old)
        else:
            cold.append(f"{signal}@{cad.length:g}s")
            cad.ready.pop(signal, None)
            for _ in range(old.size):
                fresh.add()
        return fresh

    def _join(self, cad: Cadence, bucket: Bucket, state: _Series | None,
              joined: dict[tuple[str, ...], list[str]]) -> _Series:
        """Give a series a slot in each enabled signal's bank it has none in yet.

        A new series gets all of them; a series restored from a snapshot,
        those of signals enabled since it was taken. The series is added to
        ``joined`` under the signals it got, for one log line per tick.
        """
        if state is None:
            state = cad.series[bucket.series] = _Series({}, None)
        added = []
        for signal in signals_for(bucket, self.cfg.signals):
            if signal not in state.slots:
                bank = cad.banks.get(signal)
                if bank is None:
                    bank = cad.banks[signal] = self._bank(signal, cad.length)
                state.slots[signal] = bank.add()
                added.append(signal)
        if "terms" in self.cfg.signals and not bucket.aggregated and state.term_slot is None:
            if cad.terms is None:
                cad.terms = self._terms(cad.length)
            state.term_slot = cad.terms.add()
            added.append("terms")
        if added:
            joined.setdefault(tuple(sorted(added)), []).append(str(bucket.series))
        return state

    def _plan(self, cad: Cadence, buckets: list[Bucket]) -> _Plan:
        """Positions and slots of each bank for this tick's buckets."""
        keys = [b.series for b in buckets]
        if cad.plan is not None and cad.plan.keys == keys:
            return cad.plan
        joined: dict[tuple[str, ...], list[str]] = {}
        states = [self._join(cad, b, cad.series.get(b.series), joined) for b in buckets]
        for signals, names in joined.items():
            log.info("detectors warming up", **_named(names), signals=list(signals),
                     warmup_s=self.cfg.warmup)
        if joined and self.cfg.holidays_by_brand:
            new = {name for names in joined.values() for name in names}
            self._use_holidays(cad, [(b.series.brand, st) for b, st in zip(buckets, states,
                                                                           strict=True)
                                     if str(b.series) in new])
        rows: dict[str, tuple[np.ndarray | None, np.ndarray]] = {}
        for signal in cad.banks:
            pos = [i for i, st in enumerate(states) if signal in st.slots]
            slots = np.array([states[i].slots[signal] for i in pos], np.intp)
            rows[signal] = (None if len(pos) == len(states) else np.array(pos, np.intp), slots)
        terms = None
        if cad.terms is not None:
            pos = [i for i, st in enumerate(states) if st.term_slot is not None]
            slots = np.array([states[i].term_slot for i in pos], np.intp)
            terms = (None if len(pos) == len(states) else np.array(pos, np.intp), slots)
        cad.plan = _Plan(keys, rows, terms)
        return cad.plan

    def process(
        self, buckets: list[Bucket], watched: Callable[[str], bool] = lambda brand: False
    ) -> tuple[list[Anomaly], set[str]]:
        """Score then learn one tick of closed buckets (all ending together).

        Returns the anomalies raised, and the brands that ``watched`` (an open
        incident) and whose signals are still elevated against their baseline
        (the storm is not over).
        """
        anomalies: list[Anomaly] = []
        elevated: set[str] = set()
        by_length: dict[float, list[Bucket]] = {}
        for b in buckets:
            by_length.setdefault(b.end - b.start, []).append(b)
        for length, group in by_length.items():
            self._tick(self._cadence(length), group, watched, anomalies, elevated)
        return anomalies, elevated

    def _tick(self, cad: Cadence, buckets: list[Bucket], watched: Callable[[str], bool],
              anomalies: list[Anomaly], elevated: set[str]) -> None:
        plan = self._plan(cad, buckets)
        t = buckets[0].start
        col = _Columns(buckets)
        watch = [k for k, b in enumerate(buckets) if watched(b.series.brand)]
        fired: dict[int, list[_Fired]] = {}
        for signal, (pos, slots) in plan.rows.items():
            bank = cad.banks[signal]
            x, n, shown = _feed(signal, col)
            if pos is not None:
                x, n, shown = x[pos], n[pos], shown[pos]
            scores = bank.score(t, slots, x, n)
            warm = bank.is_warm(slots)
            threshold = registry.threshold_at(signal, self.threshold, cad.length)
            alert = warm & (scores >= threshold)
            if watch:
                self._elevated(signal, bank, buckets, watch, pos, slots, scores, warm, shown,
                               registry.threshold_at(signal, ELEVATED, cad.length), elevated)
            for j in np.flatnonzero(alert).tolist():
                k = j if pos is None else int(pos[j])
                band = bank.evidence(t, 1.0 - threshold, int(slots[j]))
                fired.setdefault(k, []).append(
                    _Fired(signal, float(shown[j]), float(scores[j]), band))
            bank.learn(t, slots, x, n)
            self._log_ready(cad, signal, buckets, pos, slots, warm)
            if self.on_score is not None:  # (lists: a numpy scalar per row costs more)
                rows = zip(range(len(buckets)) if pos is None else pos.tolist(), shown.tolist(),
                           scores.tolist(), alert.tolist(), strict=True)
                for k, value, score, alerted in rows:
                    b = buckets[k]
                    self.on_score(b.series, signal, b, value, score, alerted)
        if plan.terms is not None and cad.terms is not None:
            tpos, tslots = plan.terms
            idx = range(len(buckets)) if tpos is None else tpos.tolist()
            bags = [buckets[k].terms for k in idx]
            vols = col["volume"] if tpos is None else col["volume"][tpos]
            for j, found in cad.terms.score(t, tslots, bags, vols).items():
                fired.setdefault(idx[j], []).extend(
                    _Fired(f"term:{ts.term}", ts.observed, ts.score,
                           Band(expected=ts.expected, low=0.0, high=ts.expected), ts.category)
                    for ts in found)  # the terms scored at the threshold: each alerts
            cad.terms.learn(t, tslots, bags, vols)
        for k, found in sorted(fired.items()):
            anomalies.extend(self._explain(buckets[k], found))
            elevated.add(buckets[k].series.brand)

    def _elevated(self, signal: str, bank: Detector, buckets: list[Bucket], watch: list[int],
                  pos: np.ndarray | None, slots: np.ndarray, scores: np.ndarray,
                  warm: np.ndarray, shown: np.ndarray, above: float,
                  elevated: set[str]) -> None:
        """Add the watched brands whose ``signal`` is still outside its normal band
        (or scores ``above``: :data:`ELEVATED` at the signal's bucket)."""
        index = None if pos is None else {k: j for j, k in enumerate(pos.tolist())}
        for k in watch:
            j = k if index is None else index.get(k)
            brand = buckets[k].series.brand
            if j is None or not warm[j] or brand in elevated:
                continue
            if scores[j] >= above or self._beyond(
                    signal, bank, int(slots[j]), buckets[k], float(shown[j]), above):
                elevated.add(brand)

    def _log_ready(self, cad: Cadence, signal: str, buckets: list[Bucket],
                   pos: np.ndarray | None, slots: np.ndarray, warm: np.ndarray) -> None:
        """Log each series' signal once, when its baseline becomes ready."""
        ready = cad.ready.get(signal)
        size = cad.banks[signal].size
        if ready is None or len(ready) < size:
            grown = np.zeros(max(size, 8), bool)
            if ready is not None:
                grown[: len(ready)] = ready
            ready = cad.ready[signal] = grown
        new = warm & ~ready[slots]
        if np.count_nonzero(new):
            ready[slots[new]] = True
            at = np.flatnonzero(new).tolist()
            names = [str(buckets[j if pos is None else int(pos[j])].series) for j in at]
            log.info("baseline ready", **_named(names), signal=signal)

    def _beyond(self, signal: str, bank: Detector, slot: int, bucket: Bucket,
                shown: float, above: float) -> bool:
        """Whether the value is outside its baseline's band in the crisis direction.

        Detectors alert once per excursion; this asks the baseline itself, so a
        storm that goes on without re-alerting still keeps its incident open.
        The value is where the signal is now (``Detector.current``): the
        bucket, or at a brand too small for one bucket to say, the last half
        hour.
        """
        if signal == "reach":
            return False
        band = bank.current(bucket.start, 1.0 - above, slot)
        if band.observed is not None:  # a tested level: its floor was met
            shown = band.observed
        elif signal in ("negative_share", "sentiment") and bucket.volume < self.cfg.min_volume:
            return False
        return shown < band.low if signal == "sentiment" else shown > band.high

    def _explain(self, bucket: Bucket, fired: list[_Fired]) -> list[Anomaly]:
        surprise = {f.signal: -math.log(max(1.0 - f.score, 1e-300)) for f in fired}
        total = sum(surprise.values()) or 1.0
        top = heapq.nlargest(self.evidence_terms, bucket.terms.items(), key=lambda kv: kv[1])
        bucket_tone = tone(bucket)
        out = []
        length = bucket.end - bucket.start
        for signal, shown, score, band, category in fired:
            threshold = registry.threshold_at(signal, self.threshold, length)
            level = registry.severity_for(score, threshold) or "low"
            seen = shown if band.observed is None else band.observed  # a pooled window's
            out.append(
                Anomaly(
                    series=bucket.series,
                    signal=signal,
                    start=bucket.start,
                    end=bucket.end,
                    observed=seen,
                    expected=band.expected,
                    low=band.low,
                    high=band.high,
                    score=score,
                    severity=Severity.parse(level),
                    direction=1 if seen >= band.expected else -1,
                    tone="negative" if signal in NEGATIVE_SIGNALS else bucket_tone,
                    share=surprise[signal] / total,
                    category=category,
                    top_terms=top,
                    samples=list(bucket.samples),
                    volume=bucket.volume,
                    negative_share=bucket.negative_share,
                    window=band.window,
                )
            )
        return out
