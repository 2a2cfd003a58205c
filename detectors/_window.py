"""Bounded sliding-window state shared by the detectors, for many series at once."""

from __future__ import annotations

import math

import numpy as np

from detectors._stats import P_FLOOR
from detectors.base import Bank, FloatArray, Slots

__all__ = ["HOUR", "Hold", "Records", "TailRate", "record_gate"]

HOUR = 3600.0


class _Hours(Bank):
    """State kept in hourly blocks of event time, the same hours for every series.

    Why a base: :class:`Records` and :class:`TailRate` both close an hour
    per series when event time leaves it, into a ring of blocks, and skip
    that work while every series is still in the hour. Only what a closed
    hour becomes differs.
    """

    LEARNT = ("oldest",)

    def __init__(self) -> None:
        super().__init__()
        self._state("pos", 0, dtype=np.intp)  # the next block to overwrite (the oldest)
        self._state("hour", -1, dtype=np.int64)  # the open hour (−1: none yet)
        self.oldest = -1  # the earliest open hour of any slot: a push in it rolls nothing

    def add(self) -> int:
        """A slot for one more series, with no hour open yet."""
        self.oldest = -1
        return super().add()

    def _passed(self, slots: Slots, h: int) -> Slots:
        """The slots whose open hour is not hour ``h`` (none while every slot is in it)."""
        if h == self.oldest:
            return slots[:0]
        return slots[self.hour[self._rows(slots)] != h]

    def _opened(self, slots: Slots, h: int) -> None:
        """Hour ``h`` is open for ``slots`` (their last one is closed)."""
        self.hour[slots] = h
        self.oldest = int(self.hour[: self.size].min())


class Records(_Hours):
    """Running maximum of a value over the last ``hours`` hours, per series.

    Kept as hourly block maxima (and counts): memory is ``hours`` pairs per
    series whatever the bucket length, and the window maximum is recomputed
    only when an hour closes, so a push costs a comparison. Blocks are hours
    of event time, the same hours for every series, so a push that only some
    series make (``mask``) still moves every series' window on.

    Examples
    --------
    >>> r = Records(hours=2)
    >>> s = np.array([r.add(), r.add()])
    >>> for i, t in enumerate((0.0, 1800.0, 3600.0, 7200.0)):
    ...     r.push(s, t, np.array([i + 1.0, 10.0 - i]))
    >>> r.peak(s).tolist(), r.values(s).tolist()
    ([4.0, 10.0], [4.0, 4.0])
    >>> r.push(s, 10800.0, np.array([0.0, 0.0])); r.peak(s).tolist()
    [4.0, 8.0]
    """

    def __init__(self, hours: int) -> None:
        super().__init__()
        self.hours = int(hours)
        self._state("blocks", -math.inf, (self.hours,))  # closed hourly maxima
        self._state("counts", 0.0, (self.hours,))  # values pushed in each closed hour
        self._state("cur", -math.inf)  # maximum of the open hour
        self._state("cur_n", 0.0)  # values pushed in the open hour
        self._state("past", -math.inf)  # maximum over the closed hours
        self._state("past_n", 0.0)  # values pushed in the closed hours

    def peak(self, slots: Slots, before: FloatArray | None = None) -> FloatArray:
        """Maximum over the window (closed hours and the open one); −inf if empty.

        Where ``before`` (the records when an excursion began) is not NaN,
        the maximum is taken as at most that: an excursion is judged against
        the records from before it, not against its own start.

        Reads (``peak``, ``values``, ``tail``) see the window as of the last
        :meth:`roll` or push: call ``roll(slots, t)`` before reading at a new
        time ``t``, or the hour that closed with the last push is still in it.
        """
        rows = self._rows(slots)
        m = np.maximum(self.past[rows], self.cur[rows])
        return m if before is None else np.fmin(m, before)  # fmin: NaN leaves m as it is

    def values(self, slots: Slots) -> FloatArray:
        """Number of values pushed within the window."""
        rows = self._rows(slots)
        return self.past_n[rows] + self.cur_n[rows]

    def roll(self, slots: Slots, t: float) -> None:
        """Move the window on to event time ``t``: close every open hour that has passed."""
        h = int(t // HOUR)
        r = self._passed(slots, h)
        if not len(r):  # every slot is in this hour already: the usual push
            return
        started = r[self.hour[r] >= 0]
        if len(started):
            p = self.pos[started]
            self.past_n[started] += self.cur_n[started] - self.counts[started, p]
            self.blocks[started, p] = self.cur[started]
            self.counts[started, p] = self.cur_n[started]
            self.pos[started] = (p + 1) % self.hours
            if len(started) == self.size:  # every slot: a view, not a copy of all blocks
                self.past[: self.size] = self.blocks[: self.size].max(axis=1)
            else:
                self.past[started] = self.blocks[started].max(axis=1)
        self.cur[r] = -math.inf
        self.cur_n[r] = 0.0
        self._opened(r, h)

    def push(self, slots: Slots, t: float, x: FloatArray,
             mask: np.ndarray | None = None) -> None:
        """Add the values at event time ``t`` (only where ``mask``, if given)."""
        self.roll(slots, t)
        if mask is not None and not mask.all():  # (all: keep the slots every slot's view)
            slots, x = slots[mask], x[mask]
        rows = self._rows(slots)
        self.cur[rows] = np.maximum(self.cur[rows], x)
        self.cur_n[rows] += 1.0

    def rescale(self, slots: Slots, factor: FloatArray, cap: FloatArray) -> None:
        """Multiply the window's values by ``factor``, none above ``cap`` (per slot)."""
        rows = self._rows(slots)
        self.blocks[rows] = np.minimum(self.blocks[rows] * factor[:, None], cap[:, None])
        self.cur[rows] = np.minimum(self.cur[rows] * factor, cap)
        self.past[rows] = self.blocks[rows].max(axis=1)

    def tail(self, slots: Slots, x: FloatArray, alpha: float | FloatArray, per: float = 1.0,
             cap: FloatArray | None = None) -> FloatArray:
        """``P(X ≥ x)``: ``1/(N + 1)`` at the window maximum, Pareto beyond and below.

        ``N`` is the number of values pushed, divided by ``per`` when they are
        sliding sums overlapping ``per`` pushes each (so ``N`` counts
        independent-ish periods, not buckets); ``p = 1`` while empty. Where
        ``cap`` is not NaN the maximum is taken as at most ``cap`` (the record
        before an excursion, for judging the excursion itself).
        """
        n = self.values(slots) / per
        m = self.peak(slots, cap)
        with np.errstate(invalid="ignore", over="ignore"):
            p = np.minimum(((m + 1.0) / (x + 1.0)) ** alpha / (n + 1.0), 1.0)
        p[n <= 0.0] = 1.0
        return p


class TailRate(_Hours):
    """How fast a standardised value's upper tail falls beyond ``u``: peaks over a threshold.

    Why: beyond a series' record, the record test needs the rate at which a
    still larger value becomes less likely. A light (normal) tail falls fast,
    a bursty series' slowly; a fixed rate is wrong for one of them. Beyond a
    high threshold ``u`` the excesses of almost any distribution are close
    to exponential (Pickands–Balkema–de Haan, shape 0), and the maximum
    likelihood rate is ``1 / mean excess``, here with ``prior_n``
    pseudo-excesses at ``prior_rate`` so that a short history stays near the
    conservative prior. It is never taken above a normal tail's rate at
    ``u``: levels that keep closer than normal to ``u`` say the model's
    spread is generous there, not that its far tail is lighter than normal
    (a slow drift of sentiment gave 4, and then a 1-in-50,000 level paged).

    The excesses are learnt ``delay`` hours late, kept meanwhile as hourly
    blocks of event time: a storm that climbs for hours must not teach the
    test that judges it that the tail is heavy (without the delay, a slow
    turn's own buckets halve the rate before they are judged). Learnt
    excesses are weighted down by half every ``half_life`` hours.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tr = TailRate(u=2.326, half_life=1000, delay=2)
    >>> s = np.array([tr.add()])
    >>> for i, z in enumerate(rng.standard_normal(20_000)):
    ...     tr.push(s, 60.0 * i, np.array([z]))
    >>> 2.4 < float(tr.rate(s)[0]) < 3.2    # normal: the mean excess over 2.33 is about 0.35
    True
    """

    def __init__(self, *, u: float, half_life: float, delay: int = 24,
                 prior_rate: float = 1.0, prior_n: float = 5.0) -> None:
        super().__init__()
        self.u = float(u)
        self.decay = 2.0 ** (-1.0 / max(half_life, 1.0))
        self.delay = max(1, int(delay))
        self.prior_n = float(prior_n)
        self.prior_sum = prior_n / prior_rate
        # a normal tail's rate at u: 1 / E[Z − u | Z > u] = 1 / (φ(u)/Q(u) − u)
        density = math.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)
        self.max_rate = 1.0 / (density / (0.5 * math.erfc(u / math.sqrt(2.0))) - u)
        self._state("n", 0.0)  # weighted number of learnt excesses
        self._state("total", 0.0)  # their weighted sum
        self._state("wait_n", 0.0, (self.delay,))  # closed hours not learnt yet
        self._state("wait_s", 0.0, (self.delay,))
        self._state("cur_n", 0.0)  # excesses of the open hour
        self._state("cur_s", 0.0)

    def rate(self, slots: Slots) -> FloatArray:
        """The tail's exponential rate per standard deviation beyond ``u``."""
        rows = self._rows(slots)
        return np.minimum((self.n[rows] + self.prior_n) / (self.total[rows] + self.prior_sum),
                          self.max_rate)

    def push(self, slots: Slots, t: float, z: FloatArray, mask: np.ndarray | None = None) -> None:
        """Add the excesses of ``z`` at event time ``t`` (only where ``mask``)."""
        h = int(t // HOUR)
        stale = self._passed(slots, h)
        if len(stale):  # an hour closed: it waits, and the oldest waiting one is learnt
            p = self.pos[stale]
            self.n[stale] = self.decay * self.n[stale] + self.wait_n[stale, p]
            self.total[stale] = self.decay * self.total[stale] + self.wait_s[stale, p]
            self.wait_n[stale, p] = self.cur_n[stale]
            self.wait_s[stale, p] = self.cur_s[stale]
            self.pos[stale] = (p + 1) % self.delay
            self.cur_n[stale] = 0.0
            self.cur_s[stale] = 0.0
            self._opened(stale, h)
        if mask is not None:
            slots, z = slots[mask], z[mask]
        over = z > self.u
        if np.count_nonzero(over):
            o = slots[over]
            self.cur_n[o] += 1.0
            self.cur_s[o] += z[over] - self.u


class Hold(Bank):
    """One alert per excursion: after a surprising bucket, only escalations score.

    Why: a storm lasts hours; the pipeline should hear about it once, when it
    starts, and again only if it gets worse. After a bucket with tail
    probability below ``hold_p``, for ``hold`` seconds a bucket keeps its
    score only if it is more surprising than every bucket since; otherwise
    the conditional probability of seeing it, given the bigger surprise
    already seen, is 1 and the score is 0. Calibration is untouched below
    ``hold_p``-level surprises, which are rare on normal traffic.

    With ``conditional=True`` an escalation is scored by its conditional tail
    probability ``min(1, p / p_peak)`` (``p_peak`` the most surprising bucket
    held): a storm alerts again only when it gets worse by the alert
    threshold's own factor, not when it merely edges past its peak. With
    ``escalate`` (the tail probabilities where severity tiers begin) as well,
    a bucket past a tier boundary that no alert of the excursion was past
    keeps its own ``p``: a storm first seen at ``low`` severity alerts again
    as it reaches ``high``, however smoothly it climbs, so a playbook that
    waits for ``high`` still hears of it. What the excursion said is kept for
    as long as the excursion is held, not only for ``hold`` seconds: a storm
    that stays out for longer than that does not alert again at the tier it
    was announced at.

    Examples
    --------
    >>> h = Hold(hold=3600, hold_p=1e-3)
    >>> s = np.array([h.add()])
    >>> h.push(s, 0.0, np.array([1e-6]))
    >>> h.gate(s, 0.0, np.array([1e-5])).tolist(), h.gate(s, 0.0, np.array([1e-8])).tolist()
    ([1.0], [1e-08])
    >>> c = Hold(hold=3600, hold_p=1e-3, conditional=True)
    >>> s = np.array([c.add()]); c.push(s, 0.0, np.array([1e-6]))
    >>> c.gate(s, 0.0, np.array([1e-5])).tolist(), c.gate(s, 0.0, np.array([1e-8])).round(6)
    ([1.0], array([0.01]))
    """

    def __init__(self, *, hold: float, hold_p: float, conditional: bool = False,
                 escalate: tuple[float, ...] = ()) -> None:
        super().__init__()
        hours = max(1, round(hold / HOUR))
        self.rec: Records = self._part(Records(hours))  # surprise of every bucket
        self.surprise = -math.log(hold_p)
        self.conditional = conditional
        # -ln of the tier boundaries, with a tolerance for 1 − x rounding (as severity_for)
        self.tiers = -np.log(np.asarray(escalate, np.float64) * (1.0 + 1e-6))
        # the biggest surprise an alert of the held excursion said (−inf: none):
        # escalation is judged against what was said, not against a ramp's
        # previous bucket, nor against a bucket the detector kept quiet
        self.escalates = len(self.tiers) > 0
        self._state("told", -math.inf)

    def gate(self, slots: Slots, t: float, p: FloatArray) -> FloatArray:
        """``p`` where it is news at ``t``; while a bigger surprise is held, 1 (or ``p/p_peak``).

        ``p`` is taken at :data:`P_FLOOR` at least, as a score says it: a storm
        pinned there (a share of a million mentions, dozens of standard
        deviations out) is not news again at every bucket because its
        unsayable ``p`` keeps shrinking.
        """
        p = np.maximum(p, P_FLOOR)
        self.rec.roll(slots, t)
        peak = self.rec.peak(slots)
        held = peak >= self.surprise
        if not np.count_nonzero(held):
            return p
        if self.conditional:
            ph = p[held]
            cond = ph * np.exp(peak[held])
            if self.escalates:
                told = self.told[self._rows(slots)][held]
                now = -np.log(ph)
                # a tier boundary between the last alert and this bucket: news
                worse = ((now[:, None] >= self.tiers) & (told[:, None] < self.tiers)).any(axis=1)
                cond = np.where(worse, ph, cond)
            p[held] = np.minimum(cond, 1.0)
        else:
            p[held & (-np.log(p) <= peak)] = 1.0
        return p

    def held(self, slots: Slots, t: float) -> np.ndarray:
        """Where an alert is being held at ``t`` (an alerted excursion is on)."""
        self.rec.roll(slots, t)
        return self.rec.peak(slots) >= self.surprise

    def excursion(self, slots: Slots, t: float, p: FloatArray) -> np.ndarray:
        """Where an alerted excursion is on at ``t``: held, or ``p`` itself past ``hold_p``."""
        return self.held(slots, t) | (p < math.exp(-self.surprise))

    def push(self, slots: Slots, t: float, p: FloatArray, said: FloatArray | None = None) -> None:
        """Record the (ungated) tail probabilities of the buckets just learnt.

        ``said`` is what the detector reported of them (``1 − score``), when
        it kept that from scoring; otherwise the gate is asked again.
        """
        if self.escalates:  # what the gate let through, as it did when they scored
            g = said if said is not None else self.gate(slots, t, p)
            rows = self._rows(slots)
            told = np.where(self.held(slots, t), self.told[rows], -math.inf)  # a new excursion
            loud = g < math.exp(-self.surprise)
            self.told[rows] = np.where(loud, np.maximum(told, -np.log(np.maximum(g, P_FLOOR))),
                                       told)
        self.rec.push(slots, t, -np.log(np.maximum(p, P_FLOOR)))


def record_gate(p_model: FloatArray, z: FloatArray, rec: Records, slots: Slots, cap: float,
                per_hour: float, rate: FloatArray | float = 1.0,
                before: FloatArray | None = None) -> FloatArray:
    """Tail probabilities that also ask whether the standardised level ``z`` beats the record.

    Why: per-bucket tail probabilities of 1e-3 happen a few times a day at
    one-minute buckets, however well calibrated; a crisis also takes a
    signal past anything it did in the last days. Down to ``cap`` the model's
    ``p`` is returned unchanged (calibrated); deeper, ``p`` is the larger of
    the model's and the record's: ``1/(N + 1)`` at the maximum of the last
    ``N`` values, decaying exponentially with the excess over it at ``rate``
    per standard deviation (``z`` and the records are in the model's
    standard deviations; the rate is the series' own, from
    :class:`TailRate`, or 1, the rate of a tail far heavier than normal).
    ``N`` counts hours (``per_hour`` values make one): buckets a minute apart
    are not independent chances, and so at rate 1 a five-day record has to
    be beaten by about two standard deviations before ``p`` reaches 1e-3, at
    any bucket length. ``before`` caps the record as :meth:`Records.peak` does.

    Examples
    --------
    >>> r = Records(hours=4); s = np.array([r.add()])
    >>> for i, v in enumerate((1.0, 2.0, 1.5)): r.push(s, 3600.0 * i, np.array([v]))
    >>> g = lambda z: record_gate(np.array([1e-9]), np.array([z]), r, s, 1e-2, 1.0)[0]
    >>> float(g(1.8))    # extreme for the model, no record
    0.01
    >>> bool(g(15.0) < 1e-5)    # far past the record
    True
    """
    deep = p_model < cap
    if not np.count_nonzero(deep):
        return p_model
    n = rec.values(slots) / per_hour
    with np.errstate(invalid="ignore"):
        e = np.minimum(rate * (rec.peak(slots, before) - z), 700.0)
        p_rec = np.minimum(np.exp(e) / (n + 1.0), cap)
    gated = np.maximum(p_rec, p_model)
    return np.where(deep & (n > 0.0), gated, p_model)
