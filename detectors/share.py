"""Upper-tail detector for the share of negative mentions (``negative_share``)."""

from __future__ import annotations

import numpy as np
from scipy.special import betainc, gammaln

from detectors._scales import Scales
from detectors._stats import normal_sf
from detectors.base import FloatArray, Slots

__all__ = ["ShareDetector"]


def _binom_upper(k: FloatArray, n: FloatArray, q: FloatArray) -> FloatArray:
    """Mid-p ``P(X > k) + ½P(X = k)`` for ``X ~ Binomial(n, q)``, real-valued ``k, n > 0``.

    ``P(X ≥ k) = I_q(k, n − k + 1)``; real arguments let the effective sample
    size of an over-dispersed share be used directly. ``P(X = k)``, continued
    to real ``k`` as ``I_q(k, n − k + 1) − I_q(k + 1, n − k)``, has a closed
    form (a ratio of gamma functions): a tenth of the cost of a second
    incomplete beta, and ``P(X ≥ k) − ½P(X = k)`` loses no precision.
    """
    b = n - k
    c = np.maximum(b, 0.0)
    ge = betainc(k, c + 1.0, q)
    at = np.exp(k * np.log(q) + c * np.log1p(-q) + gammaln(n + 1.0) - gammaln(k + 1.0)
                - gammaln(c + 1.0))
    # P(X > k) is 0 once k + 1 > n, and so is P(X ≥ k) once k > n
    return np.where(b >= 1.0, ge - 0.5 * at, np.where(b >= 0.0, 0.5 * ge, 0.0))


#: The most a bucket weighs in the baseline share, in typical buckets (by mentions):
#: a busy afternoon's buckets, about twice the day's mean, count in full.
WEIGHT_CAP = 2.0


class ShareDetector(Scales):
    """Is the share of negative mentions unusually high, given how many mentions there are?

    Why: the negative count alone rises with any volume spike, a launch
    included; the share rises only when the conversation turns. A share is
    more certain when more mentions stand behind it, so the bucket's ``x``
    negatives of ``n`` mentions are scored under a beta-binomial: baseline
    share ``π`` (exponentially weighted ratio of sums, learnt from counts
    winsorised on both sides, a bucket weighing at most ``WEIGHT_CAP``
    typical ones) and intra-bucket correlation ``ρ`` (mentions of one bucket share
    a topic, so they are not independent coin flips), learnt from the
    residuals. The tail probability uses a binomial with the effective
    sample size ``n / (1 + (n − 1)ρ)``: a normal approximation up to one
    standard deviation, the exact (incomplete beta) tail beyond, where it
    matters. Pooled scales (the last ``windows``: half an hour, three hours)
    catch a turn at a brand too small for one bucket to show it and a share
    that creeps up for hours (Bonferroni: the smallest tail probability times
    the number of scales tested). Deeper than ``record_cap`` a share must
    also beat, in standard deviations above the expectation, the highest of
    the last ``record_window`` seconds (see
    :func:`detectors._window.record_gate`): a calibrated 1e-3 happens daily
    at one-minute buckets, a five-day record of negativity does not.

    The floor: a bucket (or window) with fewer than ``min_volume`` mentions is
    not scored (score 0), however negative: three angry mentions at 4 a.m.
    page nobody.

    A bank: every array is indexed by slot, one series each (see
    :class:`detectors.base.Bank` and, for what the scales share with the
    sentiment detector, :class:`detectors._scales.Scales`).

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    min_volume
        Minimum number of mentions behind a share for it to be scored.
    windows
        Lengths of the pooled time scales, seconds.
    half_life
        Memory of the baseline share and of ``ρ``.
    hold, hold_p, escalate
        One alert per excursion, and again at each higher severity tier
        (see :class:`detectors._window.Hold`).
    clip_z
        Winsorising bound of the learnt negatives, standard deviations above
        the expected count.
    record_window, record_cap
        Memory of the records, and the tail probability below which a share
        must beat them.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> det = ShareDetector(bucket=300, warmup=86400, min_volume=20)
    >>> for i in range(288 * 2):    # two days, 40 mentions a bucket, 15% negative
    ...     t = 1_700_000_000 + 300 * i
    ...     neg = sum(rng.random() < 0.15 for _ in range(40))
    ...     _ = det.score_one(t, neg, 40)
    ...     det.learn_one(t, neg, 40)
    >>> det.score_one(t + 300, 7, 40) < 0.9
    True
    >>> det.score_one(t + 300, 25, 40) > 0.999    # the conversation turns
    True
    >>> det.score_one(t + 300, 9, 9) < 0.9   # 9/9 negative, under the floor: pooled only
    True
    >>> round(float(det.share[0]), 2), det.band(t + 300, 1e-3, n=40).high < 0.5
    (0.15, True)

    A bank scores many series in one call, each against its own baseline:
    here three series with shares of 5 %, 15 % and 40 % see 16 negatives of
    40, which is news only for the first.

    >>> bank = ShareDetector(bucket=300, warmup=86400, min_volume=20)
    >>> slots = np.array([bank.add() for _ in range(3)])
    >>> q, n = np.array([0.05, 0.15, 0.4]), np.full(3, 40.0)
    >>> for i in range(288 * 2):
    ...     t = 1_700_000_000 + 300 * i
    ...     neg = np.array([sum(rng.random() < p for _ in range(40)) for p in q], float)
    ...     _ = bank.score(t, slots, neg, n)
    ...     bank.learn(t, slots, neg, n)
    >>> (bank.score(t + 300, slots, np.full(3, 16.0), n) > 0.999).tolist()
    [True, False, False]
    """

    lowest, highest = 0.0, 1.0

    def _declare(self) -> None:
        # π, its clipped value, π(1 − π) and ρ change only when a bucket is
        # learnt, so they are kept rather than derived at every score.
        self._state("sx", 0.0)  # EW Σ negatives, of buckets weighed at most WEIGHT_CAP
        self._state("sn", 0.0)  # EW Σ mentions, weighed alike
        self._state("share", 0.0)  # baseline share π = sx / sn (0 before any mention)
        self._state("q", 1e-3)  # π clipped to [0.001, 0.999]: never a certain share
        self._state("qv", 1e-3 * 0.999)  # q(1 − q)
        self._state("rho_num", 0.0)  # EW Σ ((x − nπ)² − nπ(1 − π))
        self._state("rho_den", 0.0)  # EW Σ n(n − 1)π(1 − π)
        self._state("rho", 0.0)  # ρ = rho_num / rho_den within [0, ½]

    def _mass(self, x: FloatArray, n: FloatArray) -> FloatArray:
        return x  # negatives add up over the window

    def _tail(self, slots: Slots, level: FloatArray, n: FloatArray,
              k: int) -> tuple[FloatArray, FloatArray]:
        # scale to the effective sample size: the correlation acts within a
        # bucket, so a pooled window of k buckets is k such groups
        per = n / k
        ne = n / (1.0 + np.maximum(per - 1.0, 0.0) * self.rho[slots])
        q = self.q[slots]
        sd = np.sqrt(ne * self.qv[slots])
        z = ne * (level - q) / sd
        pm = normal_sf(z)
        far = np.flatnonzero(z >= 1.0)
        if len(far):
            pm[far] = _binom_upper(level[far] * ne[far], ne[far], q[far])
        return pm, z

    def _fit(self, slots: Slots, x: FloatArray, n: FloatArray, w: FloatArray,
             seen: FloatArray) -> None:
        q = self.share[slots]
        nq, n1 = n * q, n - 1.0
        # winsorise the count of negatives, once there is a model, on both sides: a
        # launch's flood of happy mentions must not teach a lower share any more than
        # a storm a higher one (the days after it would read as a turn)
        reach = 1.0 + self.clip_z * np.sqrt(n * self.qv[slots] * (1.0 + n1 * self.rho[slots]))
        mid = n * self.q[slots]
        clipped = np.minimum(np.maximum(x, mid - reach), mid + reach)
        outlier = (clipped != x) & (seen > 12.0)
        if np.count_nonzero(outlier):
            x = np.where(outlier, clipped, x)
        # ρ from the residuals, but a storm must not teach "shares are noisy"
        wr = w * ((seen > 1.0) & ~outlier)
        v = nq * (1.0 - q)
        r = x - nq
        num = self.rho_num[slots]
        num += wr * (r * r - v - num)
        den = self.rho_den[slots]
        den += wr * (v * n1 - den)
        self.rho_num[slots] = num
        self.rho_den[slots] = den
        rho = np.divide(num, den, out=np.zeros(len(den)), where=den > 0.0)
        self.rho[slots] = np.minimum(np.maximum(rho, 0.0), 0.5)
        # a bucket weighs at most WEIGHT_CAP typical ones: a launch of ten times
        # the mentions, nearly all happy, would otherwise pull the share down for
        # days, and the days after it would read as a turn
        f = np.minimum(WEIGHT_CAP * self.typ_n[slots] / n, 1.0)
        sx = self.sx[slots]
        sx += w * (x * f - sx)
        self.sx[slots] = sx
        sn = self.sn[slots]
        sn += w * (n * f - sn)
        self.sn[slots] = sn
        q = sx / sn  # sn > 0: it has taken in these mentions
        self.share[slots] = q
        q = np.minimum(np.maximum(q, 1e-3), 0.999)
        self.q[slots] = q
        self.qv[slots] = q * (1.0 - q)

    def _spread(self, slots: Slots, n: FloatArray, k: int) -> tuple[FloatArray, FloatArray]:
        q = self.share[slots]
        per = np.maximum(n / k - 1.0, 0.0)  # as _tail: the correlation acts within a bucket
        return q, np.sqrt(q * (1.0 - q) * (1.0 + per * self.rho[slots]) / n)
