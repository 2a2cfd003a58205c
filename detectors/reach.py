"""Upper-tail detector for the largest audience behind a negative mention (``reach``)."""

from __future__ import annotations

from detectors._stats import P_FLOOR
from detectors._window import Hold, Record
from detectors.base import Band

__all__ = ["ReachDetector"]

DAY = 86400.0


class ReachDetector:
    """Has a negative mention come from an account far bigger than usual?

    Why: one negative mention from an account with an exceptional following
    is an early warning: its echo arrives minutes to hours later. Follower
    counts are heavy-tailed (roughly Zipf), so a mean and a standard deviation
    mean nothing here; this is an extreme-value test instead. Over the last
    ``window`` seconds of buckets that had a negative mention the largest
    follower count ``M`` is kept (as hourly block maxima); a new hourly
    maximum beats the ``N`` before it with probability ``1/(N + 1)``, and
    beyond it the tail is Pareto with index ``tail_index``:
    ``p = ((M + 1)/(x + 1))^α / (N + 1)``, ``N`` counted in hours so the
    score does not depend on the bucket length. With the default week and
    ``α = 1`` an account must be about six times bigger than any negative
    poster of the week to reach ``p = 1e-3``.

    Accounts below ``min_followers`` never alert (the floor), nor do buckets
    without a negative mention (``x = 0``, which is not learnt either).

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    window
        Memory of the record (default seven days).
    tail_index
        Pareto index of follower counts (about 1 on social networks).
    min_followers
        Absolute floor below which no account is exceptional.
    hold, hold_p
        One alert per excursion (see :class:`detectors._window.Hold`).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(4)
    >>> det = ReachDetector(bucket=300, warmup=86400)
    >>> for i in range(288 * 2):     # typical negative posters: a few hundred followers
    ...     t = 1_700_000_000 + 300 * i
    ...     x = int(100 / rng.random() ** 0.9)
    ...     _ = det.score_one(t, x)
    ...     det.learn_one(t, x)
    >>> det.score_one(t + 300, 2000) < 0.99
    True
    >>> det.score_one(t + 300, 5_000_000) > 0.999
    True
    """

    def __init__(
        self,
        *,
        bucket: float = 60.0,
        warmup: float = DAY,
        window: float = 7 * DAY,
        tail_index: float = 1.0,
        min_followers: float = 50_000,
        hold: float = 6 * 3600.0,
        hold_p: float = 1e-3,
    ) -> None:
        self.bucket = float(bucket)
        self.warmup = float(warmup)
        self.tail_index = tail_index
        self.min_followers = min_followers
        blk = max(1, round(3600.0 / bucket))
        self.rec = Record(max(1, round(window / (blk * bucket))), blk)
        self.hold = Hold(bucket=bucket, hold=hold, hold_p=hold_p)
        self.t_first: float | None = None
        self.last_t = 0.0
        self._cache: tuple | None = None

    @property
    def warm(self) -> bool:
        """True once ``warmup`` seconds have passed since the first bucket."""
        if self.t_first is None:
            return False
        return self.last_t - self.t_first + self.bucket >= self.warmup

    def _evaluate(self, x: float) -> float:
        if x < self.min_followers:
            return 1.0
        return self.rec.tail(x, self.tail_index, self.rec.blk)

    def pvalue(self, t: float, x: float, n: float = 1.0) -> float:
        """Tail probability of the bucket's largest negative audience, no hold."""
        return self._evaluate(x)

    def score_one(self, t: float, x: float, n: float = 1.0) -> float:
        """``1 − p``; 0 while cold, without a negative mention, or under the floor."""
        if not self.warm:
            return 0.0
        p = self._evaluate(x)
        self._cache = (t, x, p)
        p = self.hold.gate(p)
        return 1.0 - (p if p > P_FLOOR else P_FLOOR)

    def learn_one(self, t: float, x: float, n: float = 1.0) -> None:
        """Add the bucket's largest negative audience to the record (if there was one)."""
        c = self._cache
        self._cache = None
        if self.t_first is None:
            self.t_first = t
        warm = self.warm
        self.last_t = t
        p = c[2] if c is not None and c[:2] == (t, x) else (self._evaluate(x) if warm else 1.0)
        self.hold.push(p)
        if x > 0:
            self.rec.push(x)

    def band(self, t: float, p: float) -> Band:
        """The record so far as the expectation; the audience whose tail probability is ``p``."""
        n = self.rec.filled * self.rec.blk + self.rec.count
        m = self.rec.peak()
        # solve ((m + 1)/(x + 1))^α / (n + 1) = p for x
        hi = (m + 1.0) * ((n + 1.0) * p) ** (-1.0 / self.tail_index) - 1.0 if n else m
        return Band(expected=m, low=0.0, high=max(hi, self.min_followers))
