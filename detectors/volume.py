"""Seasonal negative binomial × record detector for counts (``volume``, ``negative_volume``)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from detectors._ring import Ring
from detectors._shortfall import Shortfall
from detectors._stats import (
    P_FLOOR,
    ew_alpha,
    nb_dispersion,
    nb_quantile,
    nb_upper_midp,
    normal_sf,
)
from detectors._window import HOUR, Hold, Records
from detectors.base import Band, Bands, Bank, FloatArray, Slots

__all__ = ["RECORD_CAP", "SeasonalCountDetector"]

DAY = 86400.0
#: Default tail probability below which the record test is required (the registry
#: spends it, as the threshold, at coarse buckets).
RECORD_CAP = 1e-2
#: −ln of the chance, under the model, of a run of empty buckets past which the
#: silence is taken for the feed's, not the series' own (one in a billion).
GAP_SURPRISE = -math.log(1e-9)
WEEK_OFFSET_DAYS = 3  # 1970-01-01 was a Thursday: (days + 3) % 7 == 0 on Mondays
#: Weight, in days of buckets, of the prior a series' first holiday starts from
#: (its quietest weekday): its own buckets outweigh it within the day.
HOLIDAY_PRIOR_DAYS = 0.25


class _Evaluation(NamedTuple):
    """What scoring a bucket found, kept for ``learn`` (and ``evidence``) to reuse.

    ``hour`` is the hour's expected count, its variance, its count and the
    variance of independent buckets (:meth:`SeasonalCountDetector._hour`),
    ``p_fall`` and ``deficit`` what :meth:`Shortfall.tail` made of it; all
    three are None without falls.
    """

    season: FloatArray
    weekday: FloatArray
    mu: FloatArray
    phi: FloatArray
    p: FloatArray
    p_fall: FloatArray | None
    hour: tuple[FloatArray, ...] | None
    deficit: FloatArray | None


class SeasonalCountDetector(Bank):
    """Detector for counts with daily and weekly seasonality and bursts: rises, and falls.

    Why this model: mention counts are over-dispersed, seasonal (day and night,
    weekday and weekend), near zero at night, and bursty (retweet cascades give
    them tails far heavier than any count model). A bucket is scored by two
    tests and must fail both to alert:

    1. **Seasonal negative binomial.** The expected count is ``level ×
       daily(t) × weekly(t)``, each factor an exponentially weighted ratio of
       sums (the Poisson maximum-likelihood estimate, sane at zero counts); the
       count is scored under a negative binomial whose dispersion is learnt
       from the residuals (mid-p upper tail, so discrete low counts are
       calibrated too). This answers "is it unusual for this hour?".
    2. **Record (extreme value).** Over the last ``record_window`` seconds the
       largest five-minute sum ``M`` and the largest one-hour sum are kept (as
       hourly block maxima; time scales in seconds, so the test means the same
       at any bucket length). Under exchangeability a new value exceeds the
       maximum of the ``N`` values before it with probability ``1/(N + 1)``
       (``N`` counted in five-minute periods at both scales);
       beyond it the tail is Pareto with index ``tail_index``, so ``p =
       (x/M)^−α / (N + 1)`` for each of the two time scales (Bonferroni: twice
       the smaller). This
       answers "has this series done this lately?" and is what keeps a bursty
       series from paging on every burst it routinely has.

    The score is ``1 − p`` with ``p = max(p_nb, min(p_record, record_cap))``:
    down to ``record_cap`` it is the calibrated seasonal tail probability
    (``P(score ≥ 1 − p) ≈ p`` on normal traffic); deeper alerts additionally
    need a recent record, and then ``p`` is the larger (more conservative) of
    the two tail probabilities.

    Baseline hygiene: an observation is winsorised to the top of the normal
    band before it updates the seasonal model (a two-hour storm does not
    become the new normal); when a fast level stays ``shift_ratio`` away from
    the baseline for ``shift_after`` seconds the baseline jumps to it (a real
    permanent change is learnt within hours, and the records are carried
    over to it, scaled by the change). A drop so adopted does not erase the
    heights the series reached before it, within the record window: until
    they have left it, a return to them (a feed thinned to a tenth for
    hours, then whole again) is judged against the records as they were.
    The records get the same care: during
    an excursion (an alert held, or buckets the seasonal model already finds
    past ``record_cap``) a sum enters them at most ``record_growth`` times
    what they held when it began, and the excursion is judged against those,
    alerted or not, so last week's storm does not mask this week's, and a
    storm that climbs for hours does not walk the record up ahead of itself.
    (Also starting one at any sum that sets a new record caught a storm
    whose first bucket looks ordinary to the seasonal model sooner, but
    doubled the false alerts of hourly counts.) And a run of empty buckets
    the model finds one-in-a-billion (``GAP_SURPRISE``) is a gap in the
    feed, not news about the series: the seasonal model learns nothing
    from it, nor does its level adopt it, so when the mentions come back
    they meet the baseline and records they left (NAB's Apple series has
    one, two hours of zeros at 85 tweets per five minutes).

    With ``falls``, an hour short of its mentions is news too (the feed
    or the series gone quiet: see :class:`detectors._shortfall.Shortfall`), scored by its own
    tail probability, doubled for the second direction, when that is below
    ``record_cap`` and the rise's is not smaller. It is reported once per
    excursion, held on its own so an outage does not mute the storm after
    it, and never escalates: a fall is no crisis, and no playbook acts on
    one (``daemon.incidents.is_crisis_like``). Above ``record_cap`` the
    score is the rise's alone, so the calibration below holds as it is.

    One alert per excursion: after a bucket with ``p < hold_p``, for ``hold``
    seconds a bucket is scored by its conditional tail probability ``min(1,
    p / p_peak)``, ``p_peak`` being the most surprising bucket since. A storm
    alerts once, at its start, and again when it reaches a higher severity
    tier than its last alert (it then keeps its own ``p``), not each time it
    edges past its peak. A storm first seen at ``low`` severity
    therefore still reaches the playbooks that wait for ``high``. Half a day
    covers a storm; the daemon's incident dedup covers the rest of an open
    incident.

    Parameters
    ----------
    bucket
        Bucket length in seconds; every duration below is in seconds and is
        converted to buckets with it.
    warmup
        Seconds of data before ``warm`` turns true; ``score_one`` returns 0
        until then.
    record_window
        Memory of the record test (default five days).
    tail_index
        Pareto index of the burst tail beyond the record. Estimated on the
        sample the record is taken from (hourly maxima of five-minute counts
        over five days; Hill estimator on the top 20 of 120, once a day):
        the median over days and over the ten NAB Twitter series is 3.0
        (series medians 1.1 to 3.8). A per-series online estimate scored
        worse than this pooled value (too noisy at 120 maxima). NAB itself
        scores higher with a larger index; the estimate is kept, as a value
        picked by the benchmark would not carry over.
    record_cap
        Tail probability below which the record test is required.
    record_growth
        During an excursion (the hold is on, or the bucket's tail
        probability is below ``record_cap``) a sum enters the records at most
        ``record_growth`` times the records at the excursion's start: like the
        winsorised baseline, an anomaly does not define normal for the next
        one (a storm five days ago does not mask today's, a ramp does not
        raise the bar it is judged by), yet a series whose bursts keep
        growing still raises its records, by this factor per excursion.
    hold, hold_p, escalate
        Excursion hold: how long (default twelve hours), from which tail
        probability on (the alert threshold's: the default is
        ``balanced``'s), and the tail probabilities where the severity tiers
        begin (``high`` and ``critical`` at ``balanced``; the registry passes
        those of the configured threshold): a bucket past one that the last
        alert was not past alerts again with its own ``p`` (see
        :class:`detectors._window.Hold`).
    level_half_life, season_half_life, week_half_life, dispersion_half_life
        Memory of the seasonal model's parts.
    min_dispersion
        Floor of ``phi`` (``Var = μ + φμ²``), a coefficient of variation of
        1 %: it keeps the negative binomial defined, and is all. ``phi`` is
        the series' own, learnt as a ratio of sums weighted by ``μ²`` (a
        quiet stretch weighs little in it). A floor of 0.02 (14 %) never
        bound on NAB's Twitter counts, at five minutes or summed to hours,
        but it made a big brand's near-Poisson counts (300 per five
        minutes) alert 25 times less often than their threshold says and a
        measurement with 2 % noise never, both blind to a rise of a quarter.
    clip_z
        Winsorising bound, in standard deviations above the expectation.
    slots
        Knots of the daily profile (linearly interpolated).
    min_count
        The floor: a bucket with fewer counts never alerts (score 0). Used
        for negative volume, where three angry mentions at 4 a.m. should page
        nobody however unusual they are.
    share_gate
        For a count that is part of a total (negatives of all mentions): when
        the caller passes the total as ``n``, a bucket whose share ``x/n`` is
        not above its usual share does not alert. A launch that brings ten
        times the mentions brings ten times the complaints too; that surge is
        the volume signal's, not a negativity crisis.
    falls
        Score falls as well as rises (``volume``: a feed gone quiet is worth
        knowing of; negative mentions falling is not).
    holidays
        Dates (UTC days, as the weekly factors are kept) that are public
        holidays for these series. A holiday is a day of its own, with a
        factor learnt like a weekday's: the first starts from the series'
        quietest weekday (weighing a quarter of a day of buckets) and its own
        buckets take over within the day, later ones start from what the
        holidays before taught. Without it a quiet holiday is a day far
        below its weekday: reported as a fall, and learnt as a drop of the
        level that the next day has to undo. Series of other markets add
        their own (:meth:`use_holidays`).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> det = SeasonalCountDetector(bucket=300, warmup=86400)
    >>> t0 = 1_700_000_000
    >>> for i in range(288 * 3):   # three days of ~20 mentions per 5 minutes
    ...     t = t0 + 300 * i
    ...     x = sum(rng.random() < 0.2 for _ in range(100))
    ...     _ = det.score_one(t, x)
    ...     det.learn_one(t, x)
    >>> det.warm
    True
    >>> t += 300
    >>> det.score_one(t, 21) < 0.9, det.score_one(t, 80) > 0.999
    (True, True)
    >>> round(det.band(t, 0.001).expected)
    20
    """

    ADDED = ("hol", "hol_w", "cal")  # (the holidays came after version 1: see Bank.ADDED)

    def __init__(
        self,
        *,
        bucket: float = 60.0,
        warmup: float = DAY,
        record_window: float = 5 * DAY,
        tail_index: float = 3.0,
        record_cap: float = RECORD_CAP,
        record_growth: float = 2.0,
        hold: float = DAY / 2,
        hold_p: float = 1e-3,
        escalate: tuple[float, ...] = (1e-4, 1e-6),
        level_half_life: float = DAY,
        season_half_life: float = 7 * DAY,
        week_half_life: float = 21 * DAY,
        dispersion_half_life: float = 3 * DAY,
        fast_half_life: float = HOUR,
        shift_ratio: float = 2.0,
        shift_after: float = 6 * HOUR,
        min_dispersion: float = 1e-4,
        clip_z: float = 3.0,
        slots: int = 24,
        min_count: float = 0.0,
        share_gate: bool = False,
        falls: bool = False,
        holidays: Iterable[dt.date] = (),
    ) -> None:
        super().__init__()
        self.holidays = _days(holidays)
        self._calendars = [self.holidays]  # the slots' calendars: every slot's holidays, and more
        self.bucket = float(bucket)
        self.min_count = min_count
        self.share_gate = share_gate
        self.warmup = float(warmup)
        self.slots = int(slots)
        self.a_level = ew_alpha(bucket, level_half_life)
        # a profile knot is visited bucket-by-bucket for DAY/slots seconds a day
        self.a_season = ew_alpha(bucket, season_half_life / self.slots)
        self.a_week = ew_alpha(bucket, week_half_life / 7.0)
        self.a_disp = ew_alpha(bucket, dispersion_half_life)
        self.a_fast = ew_alpha(bucket, fast_half_life)
        self.shift_ratio = shift_ratio
        self.shift_buckets = max(1, round(shift_after / bucket))
        self.min_dispersion = min_dispersion
        self.clip_z = clip_z
        self.record_cap = record_cap
        self.tail_index = tail_index
        self.record_growth = record_growth
        self.k = max(1, round(HOUR / bucket))  # buckets in the one-hour sum
        self.k1 = max(1, round(300.0 / bucket))  # buckets in the five-minute sum
        self.record_window = float(record_window)
        hours = max(1, round(record_window / HOUR))
        self.rec1: Records = self._part(Records(hours))  # five-minute sums
        self.rec_h: Records = self._part(Records(hours))  # one-hour sums
        self.hold: Hold = self._part(Hold(hold=hold, hold_p=hold_p, conditional=True,
                                          escalate=escalate))
        # falls are held on their own (an outage must not mute the storm after it) and
        # judged over the hour: the expectations and variances of its last buckets
        self.shortfall: Shortfall | None = None
        if falls:
            self.shortfall = self._part(Shortfall(
                hours=hours, hold=hold, hold_p=hold_p, record_cap=record_cap,
                per_hour=self.k, periods=max(self.bucket / 300.0, 1.0), clip_z=clip_z,
                alpha=self.a_disp, min_dispersion=min_dispersion))
        # seasonal model, per series
        self._state("n", 0.0)  # buckets learnt
        self._state("lvl_num", 0.0)  # EW Σ x      (level = lvl_num / lvl_den)
        self._state("lvl_den", 0.0)  # EW Σ season(t)
        self._state("prof", 1.0, (self.slots,))  # daily profile, mean 1
        self._state("prof_w", 0.0, (self.slots,))  # visits so far (for 1/n start-up)
        self._state("week", 1.0, (7,))
        self._state("week_w", 0.0, (7,))
        self._state("hol", math.nan)  # the holidays' factor (NaN: no holiday learnt yet)
        self._state("hol_w", 0.0)
        self._state("cal", 0, dtype=np.int32)  # the slot's calendar (0: the bank's holidays)
        self._state("d_num", 0.0)  # EW Σ ((x − μ)² − x)
        self._state("d_den", 0.0)  # EW Σ μ²
        self._state("fast", 0.0)
        self._state("run", 0.0)
        self._state("empty", 0.0)  # −ln P(0) of the run of empty buckets under way
        # the level changes adopted, multiplied, while each came within record_window of the
        # last (the net change since the level the records were last at home with)
        self._state("moved", 1.0)
        self._state("moved_t", -math.inf)  # when the last of them was adopted
        self._state("last_hour", -1, dtype=np.int64)
        self._state("g_x", 0.0)  # EW Σ x and Σ n, for the share gate
        self._state("g_n", 0.0)
        # the last buckets, for the five-minute and one-hour sums
        # (with falls, each bucket's expectation and variance too, for the hour's)
        self.ring: Ring = self._part(Ring((self.k1, self.k), fields=3 if falls else 1))
        # the records when the alerted excursion in progress began (NaN: none)
        self._state("base1", math.nan)
        self._state("base_h", math.nan)

    # -- seasonal model ----------------------------------------------------
    def _position(self, t: float) -> tuple[int, int, float, int]:
        """Profile knots around ``t``, the interpolation weight, and the weekday."""
        h = (t % DAY) * self.slots / DAY - 0.5
        i = math.floor(h)
        f = h - i
        i %= self.slots
        return i, (i + 1) % self.slots, f, (int(t // DAY) + WEEK_OFFSET_DAYS) % 7

    def use_holidays(self, slots: Slots, dates: Iterable[dt.date]) -> None:
        """Let ``slots`` keep these holidays besides the bank's own (a brand's
        market's); none: the bank's alone. A setting, as the bank's are: the
        caller gives it again after a restart."""
        days = self.holidays | _days(dates)
        if days not in self._calendars:
            self._calendars.append(days)
        self.cal[slots] = self._calendars.index(days)

    def _on_holiday(self, t: float, rows: Slots | slice) -> bool | np.ndarray:
        """Whether ``t`` is a holiday of each slot: one answer when it is for all or none."""
        date = int(t // DAY)
        marks = [date in days for days in self._calendars]
        if not any(marks):
            return False
        if all(marks):
            return True
        return np.array(marks)[self.cal[rows]]

    def _season(self, t: float, slots: Slots) -> tuple[FloatArray, FloatArray]:
        """Seasonal factor at ``t`` and its weekday (or holiday) part, per slot."""
        i, j, f, day = self._position(t)
        prof, rows = self.prof, self._rows(slots)
        d = np.maximum((1.0 - f) * prof[rows, i] + f * prof[rows, j], 0.02)
        w = self.week[rows, day]
        holiday = self._on_holiday(t, rows)
        if holiday is True:
            w = self._holiday(rows)
        elif holiday is not False:
            w = np.where(holiday, self._holiday(rows), w)
        w = np.maximum(w, 0.1)
        return d * w, w

    def _holiday(self, rows: Slots | slice) -> FloatArray:
        """The holidays' factor; the quietest weekday's before the first holiday."""
        hol = self.hol[rows]
        return np.where(np.isnan(hol), self.week[rows].min(axis=1), hol)

    def _mu_phi(self, slots: Slots, season: FloatArray) -> tuple[FloatArray, FloatArray]:
        # the sums start at 0 together: a tiny addend turns 0/0 into 0 (cheaper than where)
        rows = self._rows(slots)
        level = self.lvl_num[rows] / (self.lvl_den[rows] + 1e-300)
        d_den = self.d_den[rows]
        phi = np.minimum(np.maximum(self.d_num[rows] / (d_den + 1e-300), self.min_dispersion),
                         10.0)
        phi[d_den <= 0.0] = 1.0
        return np.maximum(level * season, 0.01), phi

    def expected(self, t: float, slot: int = 0) -> float:
        """Expected count of a slot at ``t`` under the seasonal model."""
        s = np.array([slot], np.intp)
        return float(self._mu_phi(s, self._season(t, s)[0])[0][0])

    def is_warm(self, slots: Slots) -> np.ndarray:
        """True where ``warmup`` seconds of buckets have been learnt."""
        return self.n[self._rows(slots)] * self.bucket >= self.warmup

    # -- scoring -----------------------------------------------------------
    def _evaluate(self, t: float, slots: Slots, x: FloatArray) -> _Evaluation:
        self.rec1.roll(slots, t)
        self.rec_h.roll(slots, t)
        season, dw = self._season(t, slots)
        mu, phi = self._mu_phi(slots, season)
        p = _nb_tail(x, mu, phi)
        deep = p < self.record_cap
        if np.count_nonzero(deep):
            # an excursion is judged against the records from before it began (its
            # own buckets raise them, within record_growth, for the next ones only)
            s, xd, a = slots[deep], x[deep], self.tail_index
            b1, bh = self.base1[s], self.base_h[s]
            sums = self.ring.sums(s)[:, 0]
            back = self._home(t, s)
            p_rec = self.rec1.tail(s, (sums[:, 0] + xd) * back, a, self.k1, b1)
            if self.k > 1:
                ph = self.rec_h.tail(s, (sums[:, 1] + xd) * back, a, self.k1, bh)
                p_rec = 2.0 * np.minimum(p_rec, ph)
            p[deep] = np.maximum(p[deep], np.minimum(p_rec, self.record_cap))
        if self.shortfall is None:
            return _Evaluation(season, dw, mu, phi, p, None, None, None)
        hour = self._hour(slots, x, mu, phi)
        p_fall, deficit = self.shortfall.tail(t, slots, *hour[:3])
        return _Evaluation(season, dw, mu, phi, p, p_fall, hour, deficit)

    def score(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> FloatArray:
        """``1 − p`` of each ``x``, conditional on any excursion in progress; 0 if cold."""
        ev = self._evaluate(t, slots, x)
        rise = self.hold.gate(slots, t, ev.p)
        fall = None if self.shortfall is None else self.shortfall.gate(slots, t, ev.p_fall)
        score = 1.0 - np.maximum(rise if fall is None else np.minimum(rise, fall), P_FLOOR)
        quiet = ~self.is_warm(slots)
        if self.min_count > 0.0:
            quiet |= x < self.min_count
        if self.share_gate:
            rows = self._rows(slots)
            g_n = self.g_n[rows]
            quiet |= (n > 1.0) & (g_n > 0.0) & (x * g_n <= n * self.g_x[rows])
        score[quiet] = 0.0
        said = 1.0 - score  # what was said of a rise (1: nothing), for the hold's tiers
        fell = None if fall is None else fall < rise  # where a fall decided the score
        if fell is not None:
            said[fell] = 1.0
        self._keep(t, slots, x, n, (ev, said, fell))
        return score

    def learn(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> None:
        """Update the seasonal model, the records and the excursion hold."""
        kept = self._kept(t, slots, x, n)
        ev, said, _ = kept if kept is not None else (self._evaluate(t, slots, x), None, None)
        s, dw, mu, phi, p, p_fall, pooled, deficit = ev
        rows = self._rows(slots)  # (views below are only read, or written back whole)
        den = self.lvl_den[rows]
        num = self.lvl_num[rows]
        lvl = num / (den + 1e-300)  # 0 before the first bucket (see _mu_phi)
        n_ = self.n[rows]
        warm = n_ * self.bucket >= self.warmup
        if self.share_gate:
            some = n > 1.0
            g = slots[some]
            a = self.a_level
            self.g_x[g] += a * (x[some] - self.g_x[g])
            self.g_n[g] += a * (n[some] - self.g_n[g])
        excursion = self.hold.excursion(slots, t, p) | (p < self.record_cap)
        self._push_sums(t, slots, x, warm & excursion,
                        x[:, None] if self.shortfall is None
                        else np.stack((x, mu, mu + phi * mu * mu), axis=1))
        if self.shortfall is not None:
            self.shortfall.learn(t, slots, *pooled, p_fall, deficit, warm)
        p = p.copy()
        p[~warm] = 1.0
        self.hold.push(slots, t, p, said)
        gap = self._gap(slots, x, mu, phi, warm)
        if np.count_nonzero(gap):  # the feed is down, not the series quiet: nothing to learn
            on = ~gap
            slots, x, s, dw, mu, phi, num, den, lvl, n_ = (
                v[on] for v in (slots, x, s, dw, mu, phi, num, den, lvl, n_))
            rows = slots
        # winsorise: the storm must not become the baseline
        cap = mu + self.clip_z * np.sqrt(mu + phi * mu * mu) + 1.0
        xc = np.minimum(x, cap)
        young = n_ < 12
        if np.count_nonzero(young):
            xc[young] = x[young]
        n_ = n_ + 1.0
        self.n[rows] = n_
        # level: EW ratio of sums, 1/n weighting at start-up
        a = np.maximum(self.a_level, 1.0 / n_)
        num = num + a * (xc - num)
        den = den + a * (s - den)
        self.lvl_den[rows] = den
        # dispersion: E[(X − μ)² − X] = φμ² under the negative binomial
        a = np.maximum(self.a_disp, 1.0 / n_)
        a[n_ <= 12] = 0.0
        e = xc - mu
        self.d_num[rows] += a * (e * e - xc - self.d_num[rows])
        self.d_den[rows] += a * (mu * mu - self.d_den[rows])
        # fast level and level-shift detection (unclipped)
        a = np.maximum(self.a_fast, 1.0 / n_)
        fast = self.fast[rows] + a * (x / s - self.fast[rows])
        self.fast[rows] = fast
        ok = lvl > 0.0
        sr, tol = self.shift_ratio, 1.0 / s
        away = ok & ((fast > lvl * sr + tol) | (fast * sr + tol < lvl))
        run = self.run[slots]  # (a copy: changed below, written back once)
        grown = run[away] + 1.0
        run[ok] = 0.0
        run[away] = grown
        jump = (run >= self.shift_buckets) & ok  # (a level of 0 has no ratio to carry)
        if np.count_nonzero(jump):  # a lasting change of level: adopt it, and scale the records
            num[jump] = fast[jump] * den[jump]
            run[jump] = 0.0
            self._rescale(t, slots[jump], fast[jump] / lvl[jump])
        self.run[rows] = run
        self.lvl_num[rows] = num
        learnt = np.count_nonzero(ok)
        if learnt == len(slots):  # the usual case: no subset to take
            self._learn_season(t, slots, xc, lvl, dw, s, n_)
        elif learnt:
            self._learn_season(t, slots[ok], xc[ok], lvl[ok], dw[ok], s[ok], n_[ok])
        hour = int(t // HOUR)
        due = slots[self.last_hour[rows] != hour]
        if len(due):  # keep the profile and weekly factors at mean 1, hourly
            self.last_hour[due] = hour
            self._normalise(due)

    def _gap(self, slots: Slots, x: FloatArray, mu: FloatArray, phi: FloatArray,
             warm: np.ndarray) -> np.ndarray:
        """Where a warm series' run of empty buckets is past ``GAP_SURPRISE``: a gap in the feed.

        Silence is data (a small brand's night is mostly empty buckets), up
        to the point where the model finds it impossible: eight hours
        without one mention of a brand of forty a minute is an outage
        upstream. Learnt as counts, those hours were a lasting drop the
        baseline adopted, records and all, and the return of the usual
        traffic a storm on every series the feed carries. The run's
        surprise is ``−ln P(0)`` summed over its buckets, ``ln(1 + φμ)/φ``
        each under the negative binomial.
        """
        rows = self._rows(slots)
        run = self.empty[rows] + np.log1p(phi * mu) / phi
        run[x > 0.0] = 0.0
        self.empty[rows] = run
        return warm & (run >= GAP_SURPRISE)

    @property
    def falls(self) -> bool:
        """Whether falls are scored as well as rises."""
        return self.shortfall is not None

    def _hour(self, slots: Slots, x: FloatArray, mu: FloatArray, phi: FloatArray
              ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """The hour ending with this bucket: expected count, its variance, the count, and
        the variance its buckets would give if they were independent."""
        before = self.ring.sums(slots)[:, :, 1]  # (the hour's span: 0 when it is the bucket)
        m = before[:, 1] + mu
        summed = before[:, 2] + mu + phi * mu * mu
        xs = before[:, 0] + x
        return m, summed * self.shortfall.inflation(slots), xs, summed

    def _push_sums(self, t: float, slots: Slots, x: FloatArray, excursion: np.ndarray,
                   row: FloatArray) -> None:
        """Records of the five-minute and one-hour sums ending with this bucket; the ring.

        During an excursion a sum enters the records at most
        ``record_growth`` times the records when the excursion began: an
        anomaly does not define normal for the next one. ``row`` is what the
        ring keeps of each bucket: its count (and, with falls, its
        expectation and variance).
        """
        sums = self.ring.sums(slots)[:, 0]
        s1, sh = sums[:, 0] + x, sums[:, 1] + x
        if np.count_nonzero(excursion):
            e = slots[excursion]
            for rec, base, v in ((self.rec1, self.base1, s1), (self.rec_h, self.base_h, sh)):
                b = base[e]
                new = np.isnan(b)
                if np.count_nonzero(new):
                    b[new] = rec.peak(e[new])
                    base[e] = b
                lim = self.record_growth * b
                ve = v[excursion]
                clip = (b > 0.0) & (ve > lim)
                ve[clip] = lim[clip]
                v[excursion] = ve
        calm = slots[~excursion]
        self.base1[calm] = math.nan
        self.base_h[calm] = math.nan
        self.rec1.push(slots, t, s1)
        if self.k > 1:
            self.rec_h.push(slots, t, sh)
        self.ring.push(slots, row)

    def _home(self, t: float, slots: Slots) -> FloatArray:
        """Per slot, the factor that takes a sum back to the level before a recent drop.

        A drop the level adopted scaled the records down with it, yet the
        series did reach the old heights within the record window: a return
        to them (a feed that was thinned to a tenth for hours, then whole
        again) is judged against the records as they were, until those have
        left the window (against the scaled-down ones, it alerted on every
        series a thinned feed carries). The changes multiply while each
        comes within the window of the last (a burst the level took for a
        change, then its end, nets out; counted from the first of them
        instead, a run cut short forgot the rise before a fall, and masked
        two of NAB's UPS windows at a six-day record window); 1 where the
        net change is not a drop.
        """
        rows = self._rows(slots)  # (a view when every slot: only read)
        lately = t - self.moved_t[rows] <= self.record_window
        return np.where(lately, np.minimum(self.moved[rows], 1.0), 1.0)

    def _rescale(self, t: float, slots: Slots, ratio: FloatArray) -> None:
        """Carry the records over a lasting change of level by ``ratio``.

        Counts scale with the level, so the records of the new level are
        those of the old one times the ratio; none is taken above the
        records from before the excursion (the change itself) times the
        ratio, as the excursion's own sums entered clipped. Without this,
        a level three times the old one re-alerted the next afternoon,
        against records the excursion had held at twice the old ones.
        The change also joins the run that :meth:`_home` undoes.
        """
        old = t - self.moved_t[slots] > self.record_window
        self.moved_t[slots] = t
        self.moved[slots] = np.where(old, 1.0, self.moved[slots]) * ratio
        for rec, base in ((self.rec1, self.base1), (self.rec_h, self.base_h)):
            cap = np.where(np.isnan(base[slots]), math.inf, base[slots] * ratio)
            rec.rescale(slots, ratio, cap)
            base[slots] = math.nan  # the excursion was the change: the next is measured anew

    def _learn_season(self, t: float, slots: Slots, xc: FloatArray, lvl: FloatArray,
                      dw: FloatArray, s: FloatArray, n_: FloatArray) -> None:
        """Daily profile (two knots, by interpolation weight) and weekly factor."""
        i, j, f, day = self._position(t)
        ratio = xc / (lvl * dw)
        prof, pw, a0, rows = self.prof, self.prof_w, self.a_season, self._rows(slots)
        for knot, w in ((i, 1.0 - f), (j, f)):
            if w <= 0.0:
                continue
            v = pw[rows, knot] + w
            pw[rows, knot] = v
            prof[rows, knot] += w * np.maximum(a0, 1.0 / v) * (ratio - prof[rows, knot])
        week = n_ * self.bucket >= 7 * DAY  # weekly factors only after a week
        weekly = np.count_nonzero(week)
        if weekly:
            target = xc * dw / (lvl * s)
            ws = rows if weekly == len(slots) else slots[week]
            if weekly < len(slots):
                target = target[week]
            holiday = self._on_holiday(t, ws)
            if holiday is not False and holiday is not True:  # some slots' holiday, not all
                ws = slots[week] if weekly < len(slots) else slots
                self._learn_holiday(ws[holiday], target[holiday])
                ws, target = ws[~holiday], target[~holiday]
            if holiday is True:
                self._learn_holiday(ws, target)
            else:
                v = self.week_w[ws, day] + 1.0
                self.week_w[ws, day] = v
                a = np.maximum(self.a_week, 1.0 / v)
                self.week[ws, day] += a * (target - self.week[ws, day])

    def _learn_holiday(self, rows: Slots | slice, target: FloatArray) -> None:
        """The holidays' factor, as a weekday's, from the quietest weekday at the first."""
        hol, v = self.hol[rows], self.hol_w[rows]
        first = np.isnan(hol)
        if np.count_nonzero(first):
            hol[first] = self.week[rows].min(axis=1)[first]
            v[first] = HOLIDAY_PRIOR_DAYS * DAY / self.bucket
        v = v + 1.0
        a = np.maximum(self.a_week, 1.0 / v)
        self.hol[rows] = hol + a * (target - hol)
        self.hol_w[rows] = v

    def _normalise(self, slots: Slots) -> None:
        m = self.prof[slots].mean(axis=1)
        m = np.where(m > 0.0, m, 1.0)
        self.prof[slots] /= m[:, None]
        wm = self.week[slots].mean(axis=1)
        wm = np.where(wm > 0.0, wm, 1.0)
        self.week[slots] /= wm[:, None]
        self.hol[slots] /= wm
        self.lvl_num[slots] *= m * wm

    def evidence(self, t: float, p: float, slot: int = 0) -> Band:
        """The bucket's band, or the hour's where a fall decided the score (between
        ``score`` and ``learn``): "2,300 mentions in the hour, 3,900 expected"."""
        scored = self._scored(t, slot)
        if scored is None or self.shortfall is None:
            return self.band(t, p, slot)
        i, (ev, _, fell) = scored
        if not fell[i]:
            return self.band(t, p, slot)
        m, v, xs = (a[i : i + 1] for a in ev.hour[:3])
        phi = nb_dispersion(m, v, self.min_dispersion)
        return Band(expected=float(m[0]), low=float(min(nb_quantile(1.0 - p, m, phi)[0], m[0])),
                    high=float(nb_quantile(p, m, phi)[0]), observed=float(xs[0]),
                    window=self.k * self.bucket)

    def bands(self, t: float, p: float, slots: Slots) -> Bands:
        """The slots' expected counts at ``t``, central ``1 − 2p`` negative binomial bands."""
        mu, phi = self._mu_phi(slots, self._season(t, slots)[0])
        hi = nb_quantile(p, mu, phi)
        lo = np.zeros_like(mu) if p >= 0.5 else np.maximum(0.0, 2 * mu - hi)
        return Bands(expected=mu, low=np.minimum(lo, mu), high=hi)


def _days(dates: Iterable[dt.date]) -> frozenset[int]:
    """Dates as days since the epoch, as ``t // DAY`` counts them."""
    epoch = dt.date(1970, 1, 1)
    return frozenset((d - epoch).days for d in dates)


def _nb_tail(x: FloatArray, mu: FloatArray, phi: FloatArray) -> FloatArray:
    """Upper mid-p tail; a normal approximation where it is nowhere near alerting."""
    sd = np.sqrt(mu + phi * mu * mu)
    p = np.minimum(normal_sf((x - mu + 0.5) / sd), 1.0)
    far = x - mu >= sd
    if np.count_nonzero(far):
        p[far] = nb_upper_midp(x[far], mu[far], phi[far])
    return p
