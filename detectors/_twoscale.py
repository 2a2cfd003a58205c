"""Two time scales of a per-mention value (a share, a mean) for many series at once.

The share and sentiment detectors ask the same two questions of a value made
of ``n`` mentions: is this bucket's value extreme, and is the value pooled
over the last ``window`` seconds extreme? They share everything but the model
of the value's spread, so the machinery lives here once: the ring of the
pooled window, the two records, the excursion hold, the Bonferroni
combination, the warm-up rule and score-then-learn evaluating a bucket once.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from detectors._stats import P_FLOOR, ew_alpha
from detectors._window import HOUR, Hold, Records, record_gate
from detectors.base import Bank, FloatArray, Slots

DAY = 86400.0

__all__ = ["TwoScale"]

#: A bucket's evaluation, kept from ``score`` for ``learn``: whether each slot
#: was warm, its tail probability, its model tail probability (before the
#: record gate), its mass and its pooled mass and mentions.
Evaluation = tuple[
    npt.NDArray[np.bool_], FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]


class TwoScale(Bank):
    """Bucket and pooled-window tests of a per-mention value, held per excursion.

    A subclass models one value: its *mass* (what adds up over buckets:
    negatives for a share, ``mean × n`` for a mean sentiment), the *level*
    ``mass / n`` the tests are about, the tail probability of a level under
    its model (:meth:`_tail`) and how a bucket updates the model
    (:meth:`_fit`). ``sign`` is +1 for a detector of high levels and −1 for
    low ones; records hold ``sign × level`` so that a record is always a
    maximum.

    What is common, and why:

    * **Two time scales.** The bucket catches a sharp turn, the sum of the
      last ``window`` seconds (a ring of the last ``k`` buckets learnt) a slow
      creep that no single bucket shows; the bucket's tail probability is twice the smaller
      of the two (Bonferroni), or the bucket's alone while the window is under
      the floor.
    * **The floor.** A level of fewer than ``min_volume`` mentions (and at
      least one) is not tested: three angry mentions at 4 a.m. page nobody.
    * **Records.** Deeper than ``record_cap`` a level must also beat the
      record of the last ``record_window`` seconds at its scale (see
      :func:`detectors._window.record_gate`). Records take only normal
      levels (judged by the model before the gate, so an excursion does not
      drag the record along behind it) of a typical exposure (at least half
      the usual mentions: a quiet night's level is mostly noise).
    * **One alert per excursion** (:class:`detectors._window.Hold`).
    * **Warm-up in time**: ``warmup`` seconds since the first bucket with
      mentions and at least twelve of them, so a series quiet at night still
      warms in a day. Every bucket with mentions is learnt; the weight of the
      exponential memory is ``1/buckets`` until that is smaller than the
      ``half_life``'s, so the first buckets make a plain mean.
    """

    sign: float

    def __init__(
        self,
        *,
        bucket: float = 60.0,
        warmup: float = DAY,
        min_volume: int = 20,
        window: float = 3 * HOUR,
        half_life: float = 3 * DAY,
        hold: float = 6 * HOUR,
        hold_p: float = 1e-3,
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
        self.k = max(1, round(window / bucket))  # buckets in the pooled window
        self.record_cap = record_cap
        # record_gate counts hours: neighbouring buckets are not independent chances
        self.per_hour = float(max(1, round(HOUR / bucket)))
        hours = max(1, round(record_window / HOUR))
        self.rec1: Records = self._part(Records(hours))  # sign × bucket level
        self.rec_p: Records = self._part(Records(hours))  # sign × pooled level
        self.hold: Hold = self._part(Hold(hold=hold, hold_p=hold_p))
        self._state("ring_a", 0.0, (self.k,))  # masses of the last k buckets
        self._state("ring_n", 0.0, (self.k,))  # mentions of the last k buckets
        self._state("ring_i", 0, dtype=np.intp)  # next ring position to overwrite
        self._state("sum_a", 0.0)  # Σ ring_a
        self._state("sum_n", 0.0)  # Σ ring_n
        self._state("typ_n", 0.0)  # EW mentions of a bucket (weighted as the model)
        self._state("typ_pn", 0.0)  # EW mentions of the pooled window
        self._state("n_seen", 0.0)  # buckets learnt (with mentions)
        self._state("t_first", math.nan)  # first bucket with mentions
        self._state("last_t", 0.0)  # last bucket learnt
        self._declare()

    # -- the subclass's model ---------------------------------------------------------
    def _declare(self) -> None:
        """Declare the model's own per-series state (``_state``), once, at construction."""
        raise NotImplementedError

    def _mass(self, x: FloatArray, n: FloatArray) -> FloatArray:
        """What the pooled window adds up of a bucket's value ``x`` of ``n`` mentions."""
        raise NotImplementedError

    def _tail(self, slots: Slots, level: FloatArray, n: FloatArray,
              pooled: bool) -> tuple[FloatArray, FloatArray]:
        """(record-gated, model) tail probability of ``level`` of ``n`` mentions.

        Called on warm slots above the floor only; ``pooled`` says which scale.
        """
        raise NotImplementedError

    def _fit(self, slots: Slots, x: FloatArray, n: FloatArray, w: FloatArray,
             seen: FloatArray) -> None:
        """Learn the buckets (all with mentions) with weights ``w``, ``seen`` the count so far.

        ``typ_n`` has already taken the buckets in.
        """
        raise NotImplementedError

    # -- the protocol ---------------------------------------------------------------------
    def is_warm(self, slots: Slots) -> npt.NDArray[np.bool_]:
        """``warmup`` seconds since the first bucket with mentions, and twelve such buckets."""
        return (self.n_seen[slots] >= 12.0) & (
            self.last_t[slots] - self.t_first[slots] + self.bucket >= self.warmup)

    def score(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> FloatArray:
        """``1 − p`` held per excursion; 0 while cold or with too few mentions behind ``x``."""
        # move the windows on to t first: an hour that closed with the last
        # bucket learnt must not stay in a window it has left
        self.rec1.roll(slots, t)
        self.rec_p.roll(slots, t)
        ev = self._assess(slots, x, n)
        self._keep(t, slots, x, n, ev)
        # cold and under-floor slots have p = 1, which the hold keeps at 1: score 0
        return 1.0 - np.maximum(self.hold.gate(slots, t, ev[1]), P_FLOOR)

    def learn(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> None:
        """Push the records, the hold and the ring; learn every bucket with mentions."""
        ev = self._kept(t, slots, x, n)
        warm, p, pm, mass, pa, pn = self._assess(slots, x, n) if ev is None else ev
        self.hold.push(slots, t, p)
        typ_pn = self.typ_pn[slots]
        typ_pn += self.a * (pn - typ_pn)
        self.typ_pn[slots] = typ_pn
        normal = warm & (pm >= self.record_cap)
        typical = np.maximum(0.5 * self.typ_n[slots], self.floor)
        self.rec1.push(slots, t, self._record(mass, n), normal & (n >= typical))
        if self.k > 1:
            typical = np.maximum(0.5 * typ_pn, self.floor)
            self.rec_p.push(slots, t, self._record(pa, pn), normal & (pn >= typical))
        j = self.ring_i[slots]
        self.ring_a[slots, j] = mass
        self.ring_n[slots, j] = n
        self.sum_a[slots] = pa
        self.sum_n[slots] = pn
        j += 1
        j[j == self.k] = 0
        self.ring_i[slots] = j
        wrapped = slots[j == 0]
        if len(wrapped):  # re-add now and then against float drift
            self.sum_a[wrapped] = self.ring_a[wrapped].sum(axis=1)
            self.sum_n[wrapped] = self.ring_n[wrapped].sum(axis=1)
        self.last_t[slots] = t
        has = n > 0.0  # every bucket with mentions teaches; the floor is for scoring
        if np.count_nonzero(has) < len(has):
            slots, x, n = slots[has], x[has], n[has]
        seen = self.n_seen[slots] + 1.0
        self.n_seen[slots] = seen
        first = seen == 1.0
        if np.count_nonzero(first):
            self.t_first[slots[first]] = t
        w = np.maximum(self.a, 1.0 / seen)  # a plain mean until the memory is shorter
        typ_n = self.typ_n[slots]
        typ_n += w * (n - typ_n)
        self.typ_n[slots] = typ_n
        self._fit(slots, x, n, w, seen)

    # -- evaluation -----------------------------------------------------------------------
    def _assess(self, slots: Slots, x: FloatArray, n: FloatArray) -> Evaluation:
        """The bucket's :data:`Evaluation`; ``p = p_model = 1`` where cold."""
        warm = self.is_warm(slots)
        mass = self._mass(x, n)
        j = self.ring_i[slots]
        pa = self.sum_a[slots] - self.ring_a[slots, j] + mass
        pn = self.sum_n[slots] - self.ring_n[slots, j] + n
        hot = np.count_nonzero(warm)
        if hot == len(warm):
            p, pm = self._evaluate(slots, mass, n, pa, pn)
        else:
            p, pm = np.ones(len(slots)), np.ones(len(slots))
            if hot:
                i = np.flatnonzero(warm)
                p[i], pm[i] = self._evaluate(slots[i], mass[i], n[i], pa[i], pn[i])
        return warm, p, pm, mass, pa, pn

    def _evaluate(self, slots: Slots, mass: FloatArray, n: FloatArray, pa: FloatArray,
                  pn: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(tail probability over both scales, smallest model tail probability)."""
        p, pm = self._scale(slots, mass, n, False)
        if self.k == 1:
            return p, pm
        pp, ppm = self._scale(slots, pa, pn, True)
        p = np.where(pn >= self.floor, 2.0 * np.minimum(p, pp), p)
        return np.minimum(p, 1.0), np.minimum(pm, ppm)

    def _scale(self, slots: Slots, mass: FloatArray, n: FloatArray,
               pooled: bool) -> tuple[FloatArray, FloatArray]:
        """:meth:`_tail` of one scale where the floor is met; 1 elsewhere."""
        ok = n >= self.floor
        above = np.count_nonzero(ok)
        if above == len(ok):
            return self._tail(slots, mass / n, n, pooled)
        p, pm = np.ones(len(n)), np.ones(len(n))
        if above:
            i = np.flatnonzero(ok)
            p[i], pm[i] = self._tail(slots[i], mass[i] / n[i], n[i], pooled)
        return p, pm

    def _gate(self, p_model: FloatArray, level: FloatArray, sd: FloatArray, slots: Slots,
              pooled: bool) -> FloatArray:
        """:func:`~detectors._window.record_gate` of a scale (``sd`` that of the level).

        Only model tail probabilities below ``record_cap`` are gated, so a
        subclass may pass every slot's; ``record_cap`` is expected well below
        the tail probability of one standard deviation.
        """
        if not np.count_nonzero(p_model < self.record_cap):
            return p_model
        return record_gate(p_model, level * self.sign, sd, self.rec_p if pooled else self.rec1,
                           slots, self.record_cap, self.per_hour)

    def _record(self, mass: FloatArray, n: FloatArray) -> FloatArray:
        """``sign × level`` for the records (finite where ``n`` is under the floor)."""
        v = mass / np.maximum(n, self.floor)
        return v if self.sign > 0 else np.negative(v, out=v)
