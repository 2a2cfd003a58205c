"""Tests of a per-mention value (a share, a mean) at several time scales, for many series.

The share and sentiment detectors ask the same questions of a value made of
``n`` mentions: is this bucket's value extreme, and is the value pooled over
the last half hour, or the last three hours, extreme? They share everything
but the model of the value's spread, so the machinery lives here once: the
pooled windows, the records, the excursion hold, the Bonferroni combination,
the warm-up rule and score-then-learn evaluating a bucket once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from detectors._ring import Ring
from detectors._stats import P_FLOOR, ew_alpha, normal_isf
from detectors._window import HOUR, Hold, Records, TailRate, record_gate
from detectors.base import Band, Bands, Bank, FloatArray, Slots

DAY = 86400.0

__all__ = ["Scales"]

#: Where the tail-rate estimate starts, in standard deviations: one in fifteen
#: of a normal level's values lie beyond it, enough excesses to estimate the
#: rate from days of buckets; for a normal tail the rate found there (about
#: 2.3) is below the rate further out, so the estimate errs on the quiet side.
TAIL_FROM = 1.5


class Evaluation(NamedTuple):
    """A bucket's evaluation, kept from ``score`` for ``learn`` (and ``evidence``).

    Per slot, except the (scales, slots) arrays, whose first row is the
    bucket's own scale.
    """

    warm: npt.NDArray[np.bool_]
    p: FloatArray  # tail probability over the scales (1 where cold)
    p_model: FloatArray  # the smallest model tail probability, before the records
    masses: FloatArray  # (scales, slots)
    counts: FloatArray  # (scales, slots): the mentions behind each mass
    z: FloatArray  # (scales, slots): standardised levels (−inf where not tested)
    which: npt.NDArray[np.intp]  # the scale that decided p
    said: FloatArray | None = None  # 1 − score: p as the hold let it through


class Scales(Bank):
    """Bucket and pooled-window tests of a per-mention value, held per excursion.

    A subclass models one value: its *mass* (what adds up over buckets:
    negatives for a share, ``mean × n`` for a mean sentiment), the *level*
    ``mass / n`` the tests are about, the tail probability of a level under
    its model at a scale of ``k`` buckets and its standardised excess
    (:meth:`_tail`), and how a bucket updates the model (:meth:`_fit`).

    What is common, and why:

    * **Several time scales.** The bucket catches a sharp turn; the sums of
      the last ``windows`` seconds (running sums over a ring of the buckets
      learnt) catch what no single bucket shows: half an hour a conversation
      turning at a brand too small for one bucket to say so, three hours a
      slow creep. The bucket's tail probability is the smallest over the
      scales tested times their number (Bonferroni).
    * **The floor.** A level of fewer than ``min_volume`` mentions (and at
      least one) is not tested: three angry mentions at 4 a.m. page nobody.
    * **Records.** Deeper than ``record_cap`` a level must also beat the
      record of the last ``record_window`` seconds at its scale (see
      :func:`detectors._window.record_gate`). Records are of standardised
      levels, the excess over the expectation in standard deviations of a
      level of as many mentions: a share of 60 % means little in a window of
      forty mentions at night and much in one of four hundred in the
      afternoon, so a record set at night must not hide the afternoon's.
      Records take only normal levels (judged by the model before the gate,
      so an excursion does not drag the record along behind it) of a typical
      exposure (at least half the usual mentions).
    * **The tail beyond the record.** The record test anchors ``p`` at one
      chance in the hours of its window and lets it fall beyond the record
      at a rate per standard deviation. A window of an hour or more is about
      one test an hour, so the anchor fits it, and its tail falls at the
      rate its own levels show (:class:`detectors._window.TailRate`: the
      excesses over ``TAIL_FROM`` standard deviations outside alerted
      excursions, learnt a day late): a well-behaved series is not held to
      the rate of a bursty one. (At rate 1 a turn at a brand of a mention a
      minute, its three-hour level five to six standard deviations out,
      stayed at p ≈ 2e-3.) The bucket and the half hour are tested many
      times an hour against that hourly anchor; they keep rate 1, a tail far
      heavier than normal, which is what keeps a calibrated 1e-3 per bucket
      from paging daily.
    * **One alert per excursion** (:class:`detectors._window.Hold`, conditional,
      as for counts): while an alert is held, a bucket alerts again only when
      it is as unlikely given the excursion's peak as the threshold asks of
      a fresh one, or when it passes a severity tier (``escalate``) no alert
      of the excursion had. A storm whose three-hour level climbs for hours makes a
      new peak at almost every bucket; each would otherwise be an alert.
    * **Warm-up in time**: ``warmup`` seconds since the first bucket with
      mentions and at least twelve of them, so a series quiet at night still
      warms in a day. Every bucket with mentions is learnt; the weight of the
      exponential memory is ``1/buckets`` until that is smaller than the
      ``half_life``'s, so the first buckets make a plain mean.
    * **An excursion the other way is not the new normal either.** A bucket
      whose level is out by more than ``clip_z`` standard deviations against
      the alert's direction at some scale (a launch's flood of happy
      mentions) teaches with the Huber weight ``clip_z / |z|``, as a storm's
      buckets are winsorised: without it, a launch lowered a small brand's
      share enough that its next afternoons read as turns.
    """

    lowest: float  # the range of the level, for the bands
    highest: float

    def __init__(
        self,
        *,
        bucket: float = 60.0,
        warmup: float = DAY,
        min_volume: int = 20,
        windows: Sequence[float] = (HOUR / 2, 3 * HOUR),
        half_life: float = 3 * DAY,
        hold: float = 6 * HOUR,
        hold_p: float = 1e-3,
        escalate: tuple[float, ...] = (1e-4, 1e-6),
        clip_z: float = 3.0,
        record_window: float = 5 * DAY,
        record_cap: float = 1e-2,
    ) -> None:
        super().__init__()
        self.bucket = float(bucket)
        self.warmup = float(warmup)
        self.min_volume = int(min_volume)
        self.floor = float(max(self.min_volume, 1))  # a level needs a mention behind it
        self.a = ew_alpha(bucket, half_life)
        self.clip_z = clip_z
        # buckets of each scale: the bucket itself, then the pooled windows (longer than it)
        spans = sorted({max(1, round(w / bucket)) for w in windows} - {1})
        self.spans = (1, *spans)
        self.record_cap = record_cap
        # record_gate counts hours: neighbouring buckets are not independent chances
        self.per_hour = float(max(1, round(HOUR / bucket)))
        hours = max(1, round(record_window / HOUR))
        # standardised levels at each scale
        self.records: list[Records] = [self._part(Records(hours)) for _ in self.spans]
        # how fast the tail of each scale of an hour or more falls (None: rate 1)
        self.tails: list[TailRate | None] = [
            self._part(TailRate(u=TAIL_FROM, half_life=half_life / HOUR))
            if k >= self.per_hour else None for k in self.spans]
        self.hold: Hold = self._part(Hold(hold=hold, hold_p=hold_p, conditional=True,
                                          escalate=escalate))
        self.ring: Ring = self._part(Ring(self.spans[1:] or (1,), fields=2))  # mass, mentions
        self._state("typ_n", 0.0)  # EW mentions of a bucket (weighted as the model)
        self._state("typ_w", 0.0, (len(spans),))  # EW mentions of each pooled window
        self._state("n_seen", 0.0)  # buckets learnt (with mentions)
        self._state("t_first", math.nan)  # first bucket with mentions
        self._state("last_t", 0.0)  # last bucket learnt
        self._declare()

    # -- the subclass's model ---------------------------------------------------------
    def _declare(self) -> None:
        """Declare the model's own per-series state (``_state``), once, at construction."""
        raise NotImplementedError

    def _mass(self, x: FloatArray, n: FloatArray) -> FloatArray:
        """What the pooled windows add up of a bucket's value ``x`` of ``n`` mentions."""
        raise NotImplementedError

    def _tail(self, slots: Slots, level: FloatArray, n: FloatArray,
              k: int) -> tuple[FloatArray, FloatArray]:
        """(tail probability, excess) of ``level`` of ``n`` mentions pooled over ``k`` buckets.

        The model's tail probability of the level, in the direction that
        alerts, and the level's excess over the expectation in that
        direction, in standard deviations of the level under the model.
        Called on warm slots above the floor only.
        """
        raise NotImplementedError

    def _fit(self, slots: Slots, x: FloatArray, n: FloatArray, w: FloatArray,
             seen: FloatArray) -> None:
        """Learn the buckets (all with mentions) with weights ``w``, ``seen`` the count so far.

        ``typ_n`` has already taken the buckets in.
        """
        raise NotImplementedError

    def _spread(self, slots: Slots, n: FloatArray, k: int) -> tuple[FloatArray, FloatArray]:
        """(expected level, its standard deviation) of each slot's level of ``n`` mentions
        over ``k`` buckets."""
        raise NotImplementedError

    def _bands(self, slots: Slots, p: float, n: FloatArray, k: int) -> Bands:
        """The central ``1 − 2p`` bands of levels of ``n`` mentions over ``k`` buckets."""
        m, sd = self._spread(slots, n, k)
        z = normal_isf(p) if p < 0.5 else 0.0
        return Bands(expected=m, low=np.maximum(self.lowest, m - z * sd),
                     high=np.minimum(self.highest, m + z * sd))

    def _band(self, slot: int, p: float, n: float, k: int) -> Band:
        """One slot's band (:meth:`_bands`) for a level of ``n`` mentions over ``k`` buckets."""
        return self._bands(np.array([slot], np.intp), p, np.array([n]), k).at(0)

    # -- the protocol ---------------------------------------------------------------------
    def is_warm(self, slots: Slots) -> npt.NDArray[np.bool_]:
        """``warmup`` seconds since the first bucket with mentions, and twelve such buckets."""
        return (self.n_seen[slots] >= 12.0) & (
            self.last_t[slots] - self.t_first[slots] + self.bucket >= self.warmup)

    def score(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> FloatArray:
        """``1 − p`` held per excursion; 0 while cold or with too few mentions behind ``x``."""
        # move the windows on to t first: an hour that closed with the last
        # bucket learnt must not stay in a window it has left
        for rec in self.records:
            rec.roll(slots, t)
        ev = self._assess(slots, x, n)
        # cold and under-floor slots have p = 1, which the hold keeps at 1: score 0
        said = np.maximum(self.hold.gate(slots, t, ev.p), P_FLOOR)
        self._keep(t, slots, x, n, ev._replace(said=said))
        return 1.0 - said

    def learn(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> None:
        """Push the records, the hold and the ring; learn every bucket with mentions."""
        ev = self._kept(t, slots, x, n)
        e: Evaluation = self._assess(slots, x, n) if ev is None else ev
        self.hold.push(slots, t, e.p, e.said)
        rows = self._rows(slots)
        typ = np.empty_like(e.counts)
        typ[0] = self.typ_n[rows]
        if len(self.spans) > 1:
            typ_w = self.typ_w[rows].T
            typ_w += self.a * (e.counts[1:] - typ_w)
            self.typ_w[rows] = typ_w.T
            typ[1:] = typ_w
        normal = e.warm & (e.p_model >= self.record_cap)
        calm = e.warm & ~self.hold.held(slots, t)
        typical = np.maximum(0.5 * typ, self.floor)
        usual = e.counts >= typical
        for rec, zs, ok in zip(self.records, e.z, usual, strict=True):
            rec.push(slots, t, zs, normal & ok)
        for tail, zs, ok in zip(self.tails, e.z, usual, strict=True):
            if tail is not None:
                tail.push(slots, t, zs, calm & ok)
        self.ring.push(slots, np.stack((e.masses[0], n), axis=1))
        self.last_t[slots] = t
        # out the other way at some scale (a launch's flood of happy mentions): the
        # bucket teaches with the Huber weight clip_z / |z|, as a storm is winsorised
        against = -np.min(np.where(np.isfinite(e.z), e.z, 0.0), axis=0)
        huber = self.clip_z / np.maximum(against, self.clip_z)
        has = n > 0.0  # every bucket with mentions teaches; the floor is for scoring
        if np.count_nonzero(has) < len(has):
            slots, x, n, huber = slots[has], x[has], n[has], huber[has]
        seen = self.n_seen[slots] + 1.0
        self.n_seen[slots] = seen
        first = seen == 1.0
        if np.count_nonzero(first):
            self.t_first[slots[first]] = t
        # a plain mean until the memory is shorter
        w = np.maximum(self.a, 1.0 / seen) * huber
        typ_n = self.typ_n[slots]
        typ_n += w * (n - typ_n)
        self.typ_n[slots] = typ_n
        self._fit(slots, x, n, w, seen)

    # -- evaluation -----------------------------------------------------------------------
    def _assess(self, slots: Slots, x: FloatArray, n: FloatArray) -> Evaluation:
        """The bucket's :data:`Evaluation`; ``p = p_model = 1`` where cold."""
        warm = self.is_warm(slots)
        mass = self._mass(x, n)
        sums = self.ring.sums(slots)  # (slots, [mass, mentions], windows)
        masses = np.vstack((mass, sums[:, 0, : len(self.spans) - 1].T + mass))
        counts = np.vstack((n, sums[:, 1, : len(self.spans) - 1].T + n))
        hot = np.count_nonzero(warm)
        if hot == len(warm):
            p, pm, z, which = self._evaluate(slots, masses, counts)
        else:
            p, pm = np.ones(len(slots)), np.ones(len(slots))
            z = np.full(masses.shape, -math.inf)
            which = np.zeros(len(slots), np.intp)
            if hot:
                i = np.flatnonzero(warm)
                p[i], pm[i], z[:, i], which[i] = self._evaluate(slots[i], masses[:, i],
                                                                counts[:, i])
        return Evaluation(warm, p, pm, masses, counts, z, which)

    def _evaluate(self, slots: Slots, masses: FloatArray, counts: FloatArray
                  ) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.intp]]:
        """(tail probability over the scales, smallest model tail probability, excesses,
        the deciding scale)."""
        p, pm = np.ones(len(slots)), np.ones(len(slots))
        z = np.full(masses.shape, -math.inf)
        which = np.zeros(len(slots), np.intp)
        tested = np.zeros(len(slots))
        for s, k in enumerate(self.spans):
            ok = counts[s] >= self.floor
            above = np.count_nonzero(ok)
            if not above:
                continue
            i = slice(None) if above == len(ok) else np.flatnonzero(ok)
            model, zs = self._tail(slots[i], masses[s, i] / counts[s, i], counts[s, i], k)
            tail = self.tails[s]
            rate = tail.rate(slots[i]) if tail is not None else 1.0
            gated = record_gate(model, zs, self.records[s], slots[i], self.record_cap,
                                self.per_hour, rate)
            if s:
                which[i] = np.where(gated < p[i], s, which[i])
            p[i] = np.minimum(p[i], gated)
            pm[i] = np.minimum(pm[i], model)
            z[s, i] = zs
            tested += ok
        return np.minimum(p * np.maximum(tested, 1.0), 1.0), pm, z, which

    # -- explanation ----------------------------------------------------------------------
    def bands(self, t: float, p: float, slots: Slots) -> Bands:
        """Expected levels and their central ``1 − 2p`` bands for buckets of the slots'
        typical numbers of mentions."""
        return self._bands(slots, p, np.maximum(self.typ_n[slots], 1.0), 1)

    def band(self, t: float, p: float, slot: int = 0, *, n: float | None = None) -> Band:
        """Expected level and its central ``1 − 2p`` band for a bucket of ``n`` mentions
        (by default the slot's typical number)."""
        return self._band(slot, p, n if n else max(float(self.typ_n[slot]), 1.0), 1)

    def evidence(self, t: float, p: float, slot: int = 0) -> Band:
        """The band of the scale that decided the slot's score at ``t``, with its level.

        A turn caught by the half-hour window is explained by the half hour's
        level against the band of as many mentions, not by a bucket that
        alone looks ordinary; a bucket, by the band of its own mentions (20
        negatives of 20 are far out, 1 of 1 is not).
        """
        scored = self._scored(t, slot)
        if scored is None:
            return self.band(t, p, slot)
        j, e = scored
        return self._level(t, p, slot, e, j, int(e.which[j]))

    def current(self, t: float, p: float, slot: int = 0) -> Band:
        """The band of the bucket, or of the shortest window, tested at ``t``, with its level.

        Whether a storm is still on is a question about now: the bucket where
        it has enough mentions, else the shortest pooled window that does.
        The longer windows lag (the three-hour level stays out for hours
        after a storm has passed), so a window answers only up to the first
        one that typically has enough mentions (the half hour, at most
        brands): at a brand of a mention a minute the three hours are all
        there is, and a slow burn there must not look over while it goes on,
        but a bigger brand's quiet night does not hand the question to a
        level that still holds the afternoon's storm (``observed`` None where
        no such scale has enough mentions).
        """
        scored = self._scored(t, slot)
        if scored is None:
            return self.band(t, p, slot)
        j, e = scored
        usual = np.flatnonzero(self.typ_w[slot] >= self.floor)
        upto = 2 + int(usual[0]) if len(usual) else len(self.spans)  # scales that may answer
        tested = np.flatnonzero(np.isfinite(e.z[:upto, j]))
        if not len(tested):
            return self.band(t, p, slot)
        return self._level(t, p, slot, e, j, int(tested[0]))

    def _level(self, t: float, p: float, slot: int, e: Evaluation, j: int, s: int) -> Band:
        """Scale ``s``'s level in evaluation ``e`` (at position ``j``), against the band
        of as many mentions; the typical band if it had none."""
        n = float(e.counts[s, j])
        if n <= 0.0:
            return self.band(t, p, slot)
        band = self._band(slot, p, n, self.spans[s])
        return Band(band.expected, band.low, band.high, observed=float(e.masses[s, j]) / n,
                    window=self.spans[s] * self.bucket if s else 0.0)
