"""Upper-tail detector for the share of negative mentions (``negative_share``)."""

from __future__ import annotations

import math
from array import array

from scipy.special import betainc as _betainc

from detectors._stats import normal_isf, normal_sf
from detectors._window import HeldScore, Record, record_gate
from detectors.base import Band

__all__ = ["ShareDetector"]

DAY = 86400.0


def _binom_upper(k: float, n: float, q: float) -> float:
    """Mid-p ``P(X > k) + ½P(X = k)`` for ``X ~ Binomial(n, q)``, real-valued ``k, n``.

    ``P(X ≥ k) = I_q(k, n − k + 1)``; real arguments let the effective sample
    size of an over-dispersed share be used directly.
    """
    if k <= 0.0:
        return 1.0
    if k > n:
        return 0.0
    ge = float(_betainc(k, n - k + 1.0, q))
    gt = float(_betainc(k + 1.0, n - k, q)) if k + 1.0 <= n else 0.0
    return 0.5 * (ge + gt)


class ShareDetector(HeldScore):
    """Is the share of negative mentions unusually high, given how many mentions there are?

    Why: the negative count alone rises with any volume spike, a launch
    included; the share rises only when the conversation turns. A share is
    more certain when more mentions stand behind it, so the bucket's ``x``
    negatives of ``n`` mentions are scored under a beta-binomial: baseline
    share ``π`` (exponentially weighted ratio of sums, learnt from winsorised
    counts) and intra-bucket correlation ``ρ`` (mentions of one bucket share
    a topic, so they are not independent coin flips), learnt from the
    residuals. The tail probability uses a binomial with the effective
    sample size ``n / (1 + (n − 1)ρ)``. A second, pooled scale (the last
    ``window`` seconds) catches a share that creeps up for hours
    (Bonferroni: twice the smaller tail probability). Deeper than
    ``record_cap`` a share must also beat the highest share of the last
    ``record_window`` seconds (see :func:`detectors._window.record_gate`):
    a calibrated 1e-3 happens daily at one-minute buckets, a five-day record
    of negativity does not.

    The floor: a bucket (or window) with fewer than ``min_volume`` mentions is
    not scored (score 0), however negative: three angry mentions at 4 a.m.
    page nobody.

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    min_volume
        Minimum number of mentions behind a share for it to be scored.
    window
        Length of the pooled time scale, seconds.
    half_life
        Memory of the baseline share and of ``ρ``.
    hold, hold_p
        One alert per excursion (see :class:`detectors._window.Hold`).

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
    >>> det.score_one(t + 300, 25, 40) > 0.999
    True
    >>> det.score_one(t + 300, 9, 9) < 0.9   # 9/9 negative, under the floor: pooled only
    True
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
        # rec1, rec_p: records of bucket and pooled shares (above the floor)
        self.sx = 0.0  # EW Σ negatives
        self.sn = 0.0  # EW Σ mentions
        self.rho_num = 0.0  # EW Σ ((x − nπ)² − nπ(1 − π))
        self.rho_den = 0.0  # EW Σ n(n − 1)π(1 − π)
        self.ring_x = array("d", bytes(8 * self.k))  # compact: 8 bytes a value
        self.ring_n = array("d", bytes(8 * self.k))
        self.ring_i = 0
        self.sum_x = 0.0
        self.sum_n = 0.0
        self.typ_pn = 0.0  # EW of the pooled number of mentions
        self._cache: tuple | None = None

    @property
    def share(self) -> float:
        """Baseline negative share ``π``."""
        return self.sx / self.sn if self.sn > 0 else 0.0

    @property
    def rho(self) -> float:
        """Intra-bucket correlation of the beta-binomial (0 = binomial)."""
        if self.rho_den <= 0:
            return 0.0
        r = self.rho_num / self.rho_den
        return 0.0 if r < 0.0 else (r if r < 0.5 else 0.5)

    @property
    def warm(self) -> bool:
        """True once ``warmup`` seconds have passed since the first bucket with mentions."""
        if self.t_first is None or self.n_seen < 12:
            return False
        return self.last_t - self.t_first + self.bucket >= self.warmup

    def _tail(self, x: float, n: float, rec: Record, per_bucket: float) -> tuple[float, float]:
        """(record-gated, model) upper tail of ``x`` negatives of ``n``, ``per_bucket`` a bucket."""
        q = self.share
        q = 1e-3 if q < 1e-3 else (0.999 if q > 0.999 else q)
        rho = self.rho
        # scale to the effective sample size (the correlation acts within a
        # bucket), then a binomial tail
        f = 1.0 / (1.0 + (per_bucket - 1.0) * rho) if per_bucket > 1.0 else 1.0
        ne, xe = n * f, x * f
        sd = math.sqrt(ne * q * (1.0 - q))
        z = (xe - ne * q) / sd
        if z < 1.0:
            p = normal_sf(z)
            return p, p
        p = _binom_upper(xe, ne, q)
        return record_gate(p, x / n, sd / ne, rec, self.record_cap), p

    def _pooled(self, x: float, n: float) -> tuple[float, float]:
        j = self.ring_i
        return self.sum_x - self.ring_x[j] + x, self.sum_n - self.ring_n[j] + n

    def _evaluate(self, x: float, n: float) -> tuple[float, float]:
        """(tail probability, smallest model tail probability before the record gate)."""
        p, pm = self._tail(x, n, self.rec1, n) if n >= self.min_volume else (1.0, 1.0)
        if self.k > 1:
            px, pn = self._pooled(x, n)
            if pn >= self.min_volume:
                pp, ppm = self._tail(px, pn, self.rec_p, pn / self.k)
                p = 2.0 * min(p, pp)
                pm = min(pm, ppm)
        return (p if p < 1.0 else 1.0), pm

    def learn_one(self, t: float, x: float, n: float = 1.0) -> None:
        """Update the baseline share and ``ρ`` (every bucket with mentions, weighted by size)."""
        warm = self.warm
        p, pm = self._evaluated(t, x, n)
        self.hold.push(p)
        # records only of normal values (an excursion must not drag the record
        # along behind it) with a typical number of mentions behind them (a
        # value of a quiet night or of a half-filled window is mostly noise)
        px, pn = self._pooled(x, n)
        self.typ_pn += self.a * (pn - self.typ_pn)
        normal = warm and pm >= self.record_cap  # judged by the model, before the gate
        if normal and n >= self.min_volume and n >= 0.5 * self.sn:
            self.rec1.push(x / n)
        if normal and self.k > 1 and pn >= self.min_volume and pn >= 0.5 * self.typ_pn:
            self.rec_p.push(px / pn)
        j = self.ring_i
        self.sum_x += x - self.ring_x[j]
        self.sum_n += n - self.ring_n[j]
        self.ring_x[j] = x
        self.ring_n[j] = n
        self.ring_i = (j + 1) % self.k
        if self.ring_i == 0:  # re-add now and then against float drift
            self.sum_x, self.sum_n = math.fsum(self.ring_x), math.fsum(self.ring_n)
        self.last_t = t
        if n <= 0:  # every bucket with mentions teaches; the floor is for scoring
            return
        if self.t_first is None:
            self.t_first = t
        self.n_seen += 1
        q = self.share
        outlier = False
        if self.n_seen > 12:  # winsorise the count of negatives
            q_ = min(max(q, 1e-3), 0.999)
            var = n * q_ * (1 - q_) * (1.0 + (n - 1.0) * self.rho)
            cap = n * q_ + self.clip_z * math.sqrt(var) + 1.0
            if x > cap:
                x = cap
                outlier = True
        a = self.a if self.a * self.n_seen > 1.0 else 1.0 / self.n_seen
        if self.n_seen > 1 and not outlier:  # a storm must not teach "shares are noisy"
            v = n * q * (1.0 - q)
            self.rho_num += a * ((x - n * q) ** 2 - v - self.rho_num)
            self.rho_den += a * (v * (n - 1.0) - self.rho_den)
        self.sx += a * (x - self.sx)
        self.sn += a * (n - self.sn)

    def band(self, t: float, p: float, n: float | None = None) -> Band:
        """Expected share and its central ``1 − 2p`` band for a bucket of ``n`` mentions."""
        q = self.share
        n = n if n else max(self.sn, 1.0)
        var = q * (1 - q) * (1.0 + (n - 1.0) * self.rho) / n
        z = normal_isf(p) if p < 0.5 else 0.0
        sd = math.sqrt(var)
        return Band(expected=q, low=max(0.0, q - z * sd), high=min(1.0, q + z * sd))
