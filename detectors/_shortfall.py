"""An hour's count far short of its expectation: the fall test of the count detector."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

from detectors._stats import P_FLOOR, nb_dispersion, nb_lower_midp
from detectors._window import Hold, Records, record_gate
from detectors.base import Bank, FloatArray, Slots

__all__ = ["FALL_Z", "Shortfall"]

#: An hour this many standard deviations short of its expectation is a fall in the making:
#: its tail is tested, and its deficit enters the records only so far.
FALL_Z = 2.5
#: Hours whose approximate deficit is past this get the exact tail (see Shortfall.deficits).
EXACT_FROM = 2.0


class Shortfall(Bank):
    """Has an hour brought far fewer counts than its model expects? For many series.

    Why: the feed or the series gone quiet is worth knowing of, and it shows
    over an hour, not in a bucket: a bucket the feed delivered half of is a
    hiccup (NAB's Amazon counts have a few, 5 where 50 were due), an hour
    short of its mentions is the feed or the series gone quiet, and a fall
    to two thirds is seen at all.

    The caller (the count detector) gives each bucket's hour: the count
    ``xs`` of the hour ending with it, the sum ``m`` of its buckets'
    expectations and the sum ``summed`` of their variances. The hour's
    variance is ``summed`` times an inflation learnt per series (buckets of
    one hour are not independent, a quiet Sunday is quiet all day: with the
    summed variances alone, a hundredth of Apple's ordinary hours fell past
    1e-3, 432 false rows on NAB's Twitter counts), and its count is taken as
    negative binomial with that mean and variance. The lower mid-p tail is
    doubled, as two directions are tested. Down to ``record_cap`` that is
    all; deeper, the hour's deficit (a normal deviate: :meth:`deficits`)
    must also beat the deficits of the record window as they were when the
    fall began (:func:`record_gate`, at rate 1 per standard deviation), as
    a rise must beat its records: the daily profile
    is a chord of the true curve, too high near a trough by a little every
    night, and at an hour's count of a series with little noise that little
    is several standard deviations (a 2 % measurement alerted four times in
    ten normal days without the records).

    The test is one chance an hour at any bucket length, and a preset is
    spent per five-minute period (``registry.threshold_at``): a bucket of
    ``periods`` five-minute periods multiplies ``p`` by them, which leaves a
    fall as hard to report in hourly counts as in five-minute ones (spent as
    the threshold is, an hourly bucket reported a fall at every five-day
    record deficit). A fall is reported once per excursion (``hold``): no
    playbook acts on one, so there is nothing to escalate.

    Examples
    --------
    >>> f = Shortfall(hours=120, hold=43200.0, hold_p=1e-3, record_cap=1e-2, per_hour=12)
    >>> s = np.array([f.add()])
    >>> t, m, v = 0.0, np.array([600.0]), np.array([900.0])
    >>> for i in range(288 * 2):    # two days of ordinary hours, 600 ± 30
    ...     t = 300.0 * i
    ...     xs = m + 30.0 * np.sin(i)
    ...     f.learn(t, s, m, v, xs, v, *f.tail(t, s, m, v, xs), np.array([True]))
    >>> float(f.tail(t + 300.0, s, m, v, np.array([560.0]))[0][0])    # short, but ordinarily so
    1.0
    >>> bool(f.tail(t + 300.0, s, m, v, np.array([100.0]))[0][0] < 1e-3)    # the feed gone quiet
    True
    """

    def __init__(self, *, hours: int, hold: float, hold_p: float, record_cap: float,
                 per_hour: float, periods: float = 1.0, clip_z: float = 3.0,
                 alpha: float = 1e-3, min_dispersion: float = 1e-4) -> None:
        super().__init__()
        self.record_cap = record_cap
        self.per_hour = float(per_hour)  # buckets an hour: hours overlapping in records
        self.periods = float(periods)  # five-minute periods a bucket spans
        self.clip_z = clip_z
        self.alpha = alpha  # per-bucket weight of the inflation's EW sums
        self.min_dispersion = min_dispersion
        self.hold: Hold = self._part(Hold(hold=hold, hold_p=hold_p))
        self.rec: Records = self._part(Records(hours))  # the hours' deficits, in sd
        self._state("base", math.nan)  # the deficit records when a fall began
        # EW Σ (S − M)² (winsorised) and Σ V of the hours: how much more an hour varies
        # than its buckets would if they were independent
        self._state("h_num", 0.0)
        self._state("h_den", 0.0)

    def inflation(self, slots: Slots) -> FloatArray:
        """How many times its buckets' summed variances an hour's count varies (≥ 1)."""
        rows = self._rows(slots)
        den = self.h_den[rows]
        return np.where(den > 0.0, np.maximum(self.h_num[rows] / (den + 1e-300), 1.0), 1.0)

    def deficits(self, m: FloatArray, v: FloatArray, xs: FloatArray
                 ) -> tuple[FloatArray, FloatArray]:
        """Each hour's deficit as a normal deviate of its own lower tail, and that tail doubled.

        Why not ``(m − xs) / sd``: a series whose rate wanders (a busy day,
        a news cycle) has an hour's standard deviation in proportion to
        its mean, so that ratio cannot pass ``1 / cv``: where hours stray
        as NAB's Twitter counts do (0.18 to 0.60 in log), a feed that
        delivers a tenth of its mentions, or none, was no further out than
        an ordinary slow hour, and never reported. The deviate of the
        count's own tail (``Φ⁻¹`` of it) grows without bound as the count
        falls, and is about the plain deficit where the count is about
        normal. Every hour gets the Wilson–Hilferty deviate of a gamma with
        its mean and variance (the negative binomial's continuous twin: a
        cube root, cheap for every series); where that is past
        ``EXACT_FROM``, where records are set and falls decided, the exact
        negative binomial tail replaces it (the cube root is off by a
        standard deviation or more for an hour of a dozen counts, none of
        them come). The doubled tail is 1 elsewhere.

        Examples
        --------
        >>> f = Shortfall(hours=120, hold=43200.0, hold_p=1e-3, record_cap=1e-2, per_hour=12)
        >>> m, v = np.full(3, 1000.0), np.full(3, 360.0 ** 2)    # a cv of 0.36
        >>> (m - np.array([900.0, 100.0, 0.0])) / np.sqrt(v)    # a tenth, and none: 2.5, 2.8
        array([0.27777778, 2.5       , 2.77777778])
        >>> f.deficits(m, v, np.array([900.0, 100.0, 0.0]))[0].round(2)
        array([0.17, 4.49, 8.42])
        """
        c = v / (9.0 * m * m)  # 1/(9k), k the gamma's shape: cv² = 1/k
        z = (1.0 - c - np.cbrt((xs + 0.5) / m)) / np.sqrt(c)
        pm = np.ones_like(m)
        low = np.flatnonzero(z > EXACT_FROM)
        if len(low):
            ml = m[low]
            lower = nb_lower_midp(xs[low], ml, nb_dispersion(ml, v[low], self.min_dispersion))
            pm[low] = np.minimum(2.0 * lower, 1.0)
            z[low] = -ndtri(lower)
        return z, pm

    def tail(self, t: float, slots: Slots, m: FloatArray, v: FloatArray,
             xs: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Tail probability of each hour's count ``xs`` from below (1 where it is not short),
        and its deficit (:meth:`deficits`), for :meth:`learn`.

        ``v`` is the hour's variance (``summed`` × :meth:`inflation`).
        """
        p = np.ones_like(m)
        self.rec.roll(slots, t)
        z, pm = self.deficits(m, v, xs)
        low = np.flatnonzero(z > FALL_Z)
        if len(low):
            per = self.periods
            s = slots[low]
            p[low] = per * record_gate(pm[low], z[low], self.rec, s, self.record_cap / per,
                                       self.per_hour, before=self.base[s])
        p[p >= self.record_cap] = 1.0
        return p, z

    def gate(self, slots: Slots, t: float, p: FloatArray) -> FloatArray:
        """``p`` where a fall is news at ``t``; 1 while one is held (once per excursion)."""
        return np.where(self.hold.held(slots, t), 1.0, np.maximum(p, P_FLOOR))

    def learn(self, t: float, slots: Slots, m: FloatArray, v: FloatArray, xs: FloatArray,
              summed: FloatArray, p: FloatArray, z: FloatArray, warm: np.ndarray) -> None:
        """Learn the hour's spread and the deficit records; hold what was news.

        The inflation is learnt from deviations winsorised at ``clip_z`` both
        ways (an outage is not the spread of ordinary hours). The deficit
        records are those of every warm hour, but during a fall a deficit
        enters them at most one standard deviation past the records when it
        began (``base``): a deficit the model makes every night walks the
        records up to it within a few nights, while the fall itself is judged
        against ``base``, so that its first, shallower hours do not raise the
        bar for its deeper ones (judged against its own first hour, a day at
        a tenth of a wandering stream was reported once in six). The
        arguments are those :meth:`tail` had, ``summed`` the variance of
        the hour's buckets as if independent, and ``p`` and ``z`` what
        :meth:`tail` returned.
        """
        rows = self._rows(slots)
        sd = np.sqrt(v)
        lim = self.clip_z * sd
        d = np.minimum(np.maximum(xs - m, -lim), lim)  # (np.clip, without its overhead)
        a = np.where(warm, self.alpha, 0.0)
        self.h_num[rows] += a * (d * d - self.h_num[rows])
        self.h_den[rows] += a * (summed - self.h_den[rows])
        fall = warm & ((z > FALL_Z) | self.hold.held(slots, t))
        if np.count_nonzero(fall):
            base = self.base[slots]  # (a copy: written back once)
            start = fall & np.isnan(base)
            if np.count_nonzero(start):
                base[start] = np.maximum(self.rec.peak(slots[start]), FALL_Z)
            base[~fall] = math.nan
            self.base[rows] = base
            z = np.where(fall, np.minimum(z, base + 1.0), z)
        else:
            self.base[rows] = math.nan
        self.rec.push(slots, t, z, warm)
        self.hold.push(slots, t, np.where(warm, p, 1.0))
