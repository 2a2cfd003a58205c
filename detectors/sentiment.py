"""Lower-tail detector for mean sentiment (``sentiment``): the slow burn."""

from __future__ import annotations

import math
from array import array

from detectors._stats import normal_isf, normal_sf
from detectors._window import HeldScore, Record, record_gate
from detectors.base import Band

__all__ = ["SentimentDetector"]

DAY = 86400.0


class SentimentDetector(HeldScore):
    """Is the mean sentiment of a bucket — or of the last hours — unusually negative?

    Why: a crisis can burn slowly, negativity climbing for hours while the
    volume stays almost normal, so no single bucket is extreme. The bucket
    mean ``x`` of ``n`` scored mentions has variance ``σ²/n + τ²``: ``σ²`` is
    the per-mention spread (so a mean of 3 mentions counts for little) and
    ``τ²`` the bucket-to-bucket drift of the true mean (over-dispersion, so a
    busy bucket is not judged as if its mentions were independent). Two time
    scales are tested, the bucket and the pooled last ``window`` seconds
    (Bonferroni: twice the smaller tail probability); the pooled one catches
    the slow burn. Only the lower tail alerts: a positive swing (a launch) is
    not a crisis. Deeper than ``record_cap`` a mean must also be lower than
    any of the last ``record_window`` seconds (see
    :func:`detectors._window.record_gate`), so a calibrated 1e-3, which
    happens daily at one-minute buckets, does not page on its own.

    The baseline mean and spreads are exponentially weighted and learnt from
    winsorised values (a storm is not absorbed). Buckets, and windows, with
    fewer than ``min_volume`` mentions are not scored (score 0): three angry
    mentions at 4 a.m. page nobody. They are learnt, weighted by their size.

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    min_volume
        Minimum number of scored mentions behind a mean for it to be scored.
    window
        Length of the pooled time scale, seconds (default three hours).
    half_life
        Memory of the baseline mean and spreads (default three days).
    hold, hold_p
        One alert per excursion (see :class:`detectors._window.Hold`).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(2)
    >>> det = SentimentDetector(bucket=300, warmup=86400, min_volume=10)
    >>> for i in range(288 * 2):    # two days of mildly positive chatter
    ...     t = 1_700_000_000 + 300 * i
    ...     xs = [rng.gauss(0.1, 0.4) for _ in range(30)]
    ...     _ = det.score_one(t, sum(xs) / 30, 30)
    ...     det.learn_one(t, sum(xs) / 30, 30)
    >>> det.score_one(t + 300, 0.1, 30) < 0.9
    True
    >>> det.score_one(t + 300, -0.5, 30) > 0.999     # a sharp turn negative
    True
    >>> det.score_one(t + 300, -0.9, 3)                # too few mentions to judge
    0.0
    """

    def __init__(
        self,
        *,
        bucket: float = 60.0,
        warmup: float = DAY,
        min_volume: int = 20,
        window: float = 3 * 3600.0,
        half_life: float = 3 * DAY,
        hold: float = 6 * 3600.0,
        hold_p: float = 1e-3,
        clip_z: float = 3.0,
        record_window: float = 5 * DAY,
        record_cap: float = 1e-2,
    ) -> None:
        self._setup(
            bucket=bucket, warmup=warmup, min_volume=min_volume, window=window,
            half_life=half_life, hold=hold, hold_p=hold_p, clip_z=clip_z,
            record_window=record_window, record_cap=record_cap,
        )
        # rec1, rec_p: records of negated bucket and pooled means (above the floor)
        self.w = 0.0  # EW Σ n
        self.m = 0.0  # EW mean of x (n-weighted)
        self.s2 = 0.25  # per-mention variance σ² (prior: a wide spread)
        self.tau2 = 0.0  # between-bucket variance τ² of the true mean
        self.inv_n = 0.0  # EW mean of 1/n
        self.d2 = 0.0  # EW mean of squared deviations
        self.ring_n = array("d", bytes(8 * self.k))  # compact: 8 bytes a value
        self.ring_sx = array("d", bytes(8 * self.k))
        self.ring_i = 0
        self.sum_n = 0.0
        self.sum_sx = 0.0
        self.typ_pn = 0.0  # EW of the pooled number of mentions
        self._cache: tuple | None = None

    @property
    def warm(self) -> bool:
        """True once ``warmup`` seconds have passed since the first bucket with mentions.

        Time, not bucket count: a series that is quiet at night still warms in a day.
        """
        if self.t_first is None or self.n_seen < 12:
            return False
        return self.last_t - self.t_first + self.bucket >= self.warmup

    def _pooled(self, x: float, n: float) -> tuple[float, float]:
        pn = self.sum_n - self.ring_n[self.ring_i] + n
        psx = self.sum_sx - self.ring_sx[self.ring_i] + x * n
        return pn, (psx / pn if pn > 0 else 0.0)

    def _p(self, x: float, var: float, rec: Record) -> tuple[float, float]:
        """(record-gated, model) lower tail probability of a mean ``x`` with variance ``var``."""
        sd = math.sqrt(var)
        z = (self.m - x) / sd
        p = normal_sf(z)
        if z < 1.0:
            return p, p
        return record_gate(p, -x, sd, rec, self.record_cap), p

    def _evaluate(self, x: float, n: float) -> tuple[float, float]:
        """(tail probability, smallest model tail probability before the record gate)."""
        p, pm = (self._p(x, self.s2 / n + self.tau2, self.rec1) if n >= self.min_volume
                 else (1.0, 1.0))
        if self.k > 1:
            pn, px = self._pooled(x, n)
            if pn >= self.min_volume:
                # the pooled mean: drift variance shrinks less than 1/k when buckets co-move
                pp, ppm = self._p(px, self.s2 / pn + self.tau2 / min(self.k, 3), self.rec_p)
                p = 2.0 * min(p, pp)
                pm = min(pm, ppm)
        return (p if p < 1.0 else 1.0), pm

    def learn_one(self, t: float, x: float, n: float = 1.0) -> None:
        """Update the baseline with a bucket's mean (every bucket with mentions)."""
        warm = self.warm
        p, pm = self._evaluated(t, x, n)
        self.hold.push(p)
        # records only of normal means (an excursion must not drag the record
        # along behind it) with a typical number of mentions behind them (a
        # mean of a quiet night or of a half-filled window is mostly noise)
        pn, px = self._pooled(x, n)
        self.typ_pn += self.a * (pn - self.typ_pn)
        normal = warm and pm >= self.record_cap  # judged by the model, before the gate
        if normal and n >= self.min_volume and n >= 0.5 * self.w:
            self.rec1.push(-x)
        if normal and self.k > 1 and pn >= self.min_volume and pn >= 0.5 * self.typ_pn:
            self.rec_p.push(-px)
        j = self.ring_i
        self.sum_n += n - self.ring_n[j]
        self.sum_sx += x * n - self.ring_sx[j]
        self.ring_n[j] = n
        self.ring_sx[j] = x * n
        self.ring_i = (j + 1) % self.k
        if self.ring_i == 0:  # re-add now and then against float drift
            self.sum_n, self.sum_sx = math.fsum(self.ring_n), math.fsum(self.ring_sx)
        self.last_t = t
        if n <= 0:  # every bucket with mentions teaches; the floor is for scoring
            return
        if self.t_first is None:
            self.t_first = t
        self.n_seen += 1
        # winsorise against the current model once it has some data
        outlier = False
        if self.n_seen > 12:
            sd = math.sqrt(self.s2 / n + self.tau2)
            lo, hi = self.m - self.clip_z * sd, self.m + self.clip_z * sd
            if not lo <= x <= hi:
                x = lo if x < lo else hi
                outlier = True
        a = self.a if self.a * self.n_seen > 1.0 else 1.0 / self.n_seen
        d = x - self.m
        self.m += a * d
        # E[d²] = σ²/n + τ². With n nearly constant the two cannot be told
        # apart, so σ² takes E[d²·n] (exact at the typical n) and τ² what is
        # left over when bucket sizes vary.
        d2 = d * d
        self.w += a * (n - self.w)
        if self.n_seen == 1 or outlier:  # a storm must not teach "means are noisy"
            return
        self.s2 += a * (d2 * n - self.s2)
        if self.s2 < 1e-4:
            self.s2 = 1e-4
        self.inv_n += a * (1.0 / n - self.inv_n)
        self.d2 += a * (d2 - self.d2)
        self.tau2 = max(0.0, self.d2 - self.s2 * self.inv_n)

    def band(self, t: float, p: float) -> Band:
        """Expected mean sentiment and its central ``1 − 2p`` band for a bucket of typical size."""
        n = self.w if self.w > 0 else 1.0
        sd = math.sqrt(self.s2 / n + self.tau2)
        z = normal_isf(p) if p < 0.5 else 0.0
        return Band(expected=self.m, low=max(-1.0, self.m - z * sd), high=min(1.0, self.m + z * sd))
