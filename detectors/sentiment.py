"""Lower-tail detector for mean sentiment (``sentiment``): the slow burn."""

from __future__ import annotations

import numpy as np

from detectors._scales import Scales
from detectors._stats import normal_sf
from detectors.base import FloatArray, Slots

__all__ = ["SentimentDetector"]


class SentimentDetector(Scales):
    """Is the mean sentiment of a bucket — or of the last hours — unusually negative?

    Why: a crisis can burn slowly, negativity climbing for hours while the
    volume stays almost normal, so no single bucket is extreme. The bucket
    mean ``x`` of ``n`` scored mentions has variance ``σ²/n + τ²``: ``σ²`` is
    the per-mention spread (so a mean of 3 mentions counts for little) and
    ``τ²`` the bucket-to-bucket drift of the true mean (over-dispersion, so a
    busy bucket is not judged as if its mentions were independent). Three time
    scales are tested, the bucket and the pooled last ``windows`` (half an
    hour and three hours; Bonferroni: the smallest tail probability times the
    number of scales tested): half an hour catches a turn at a brand too
    small for one bucket to show it, three hours the slow burn. Only the
    lower tail alerts: a positive swing (a launch) is not a crisis. Deeper
    than ``record_cap`` a mean must also be further below the expectation,
    in standard deviations, than any of the last ``record_window`` seconds
    (see :func:`detectors._window.record_gate`), so a calibrated 1e-3, which
    happens daily at one-minute buckets, does not page on its own.

    The baseline mean and spreads are exponentially weighted and learnt from
    winsorised values (a storm is not absorbed). Buckets, and windows, with
    fewer than ``min_volume`` mentions are not scored (score 0): three angry
    mentions at 4 a.m. page nobody. They are learnt, weighted by their size.

    A bank: every array is indexed by slot, one series each (see
    :class:`detectors.base.Bank` and, for what the scales share with the
    share detector, :class:`detectors._scales.Scales`).

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    min_volume
        Minimum number of scored mentions behind a mean for it to be scored.
    windows
        Lengths of the pooled time scales, seconds (default half an hour and
        three hours).
    half_life
        Memory of the baseline mean and spreads (default three days).
    hold, hold_p, escalate
        One alert per excursion, and again at each higher severity tier
        (see :class:`detectors._window.Hold`).
    clip_z
        Winsorising bound of the learnt means, standard deviations either side.
    record_window, record_cap
        Memory of the records, and the tail probability below which a mean
        must beat them.

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
    >>> det.score_one(t + 300, -0.9, 3) < 0.9          # too few to judge alone, pooled only
    True
    >>> det.score_one(t + 300, 0.9, 30) < 0.5          # a launch is not a crisis
    True
    """

    lowest, highest = -1.0, 1.0

    def _declare(self) -> None:
        # typ_n (the EW number of scored mentions) is the typical bucket size
        self._state("m", 0.0)  # EW mean of x (n-weighted)
        self._state("s2", 0.25)  # per-mention variance σ² (prior: a wide spread)
        self._state("tau2", 0.0)  # between-bucket variance τ² of the true mean
        self._state("inv_n", 0.0)  # EW mean of 1/n
        self._state("d2", 0.0)  # EW mean of squared deviations

    def _mass(self, x: FloatArray, n: FloatArray) -> FloatArray:
        return x * n  # sums of sentiment add up over the window

    def _tail(self, slots: Slots, level: FloatArray, n: FloatArray,
              k: int) -> tuple[FloatArray, FloatArray]:
        # the pooled mean's drift variance shrinks less than 1/k: buckets co-move
        tau2 = self.tau2[slots] / min(k, 3)
        z = (self.m[slots] - level) / np.sqrt(self.s2[slots] / n + tau2)
        return normal_sf(z), z

    def _fit(self, slots: Slots, x: FloatArray, n: FloatArray, w: FloatArray,
             seen: FloatArray) -> None:
        m, s2 = self.m[slots], self.s2[slots]
        # winsorise against the current model once it has some data
        reach = self.clip_z * np.sqrt(s2 / n + self.tau2[slots])
        clipped = np.minimum(np.maximum(x, m - reach), m + reach)
        outlier = (seen > 12.0) & (clipped != x)
        d = np.where(outlier, clipped, x) - m
        self.m[slots] = m + w * d
        # E[d²] = σ²/n + τ². With n nearly constant the two cannot be told
        # apart, so σ² takes E[d²·n] (exact at the typical n) and τ² what is
        # left over when bucket sizes vary. A storm must not teach "means are
        # noisy", and one bucket has no spread.
        wu = w * ((seen > 1.0) & ~outlier)
        d2 = d * d
        s2 = np.maximum(s2 + wu * (d2 * n - s2), 1e-4)
        self.s2[slots] = s2
        inv_n = self.inv_n[slots]
        inv_n += wu * (1.0 / n - inv_n)
        self.inv_n[slots] = inv_n
        dd = self.d2[slots]
        dd += wu * (d2 - dd)
        self.d2[slots] = dd
        self.tau2[slots] = np.maximum(dd - s2 * inv_n, 0.0)

    def _spread(self, slots: Slots, n: FloatArray, k: int) -> tuple[FloatArray, FloatArray]:
        tau2 = self.tau2[slots] / min(k, 3)  # as _tail
        return self.m[slots], np.sqrt(self.s2[slots] / n + tau2)
