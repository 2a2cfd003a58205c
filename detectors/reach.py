"""Upper-tail detector for the largest audience behind a negative mention (``reach``)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from detectors._stats import P_FLOOR
from detectors._window import HOUR, Hold, Records
from detectors.base import Bands, Bank, FloatArray, Slots

__all__ = ["ReachDetector"]

DAY = 86400.0


class ReachDetector(Bank):
    """Has a negative mention come from an account far bigger than usual?

    Why: one negative mention from an account with an exceptional following
    is an early warning: its echo arrives minutes to hours later. Follower
    counts are heavy-tailed (roughly Zipf), so a mean and a standard deviation
    mean nothing here; this is an extreme-value test instead. Over the last
    ``window`` seconds of buckets that had a negative mention the largest
    follower count ``M`` is kept (as hourly block maxima); a new hourly
    maximum beats the ``N`` before it with probability ``1/(N + 1)``, and
    beyond it the tail is Pareto with index ``α``:
    ``p = ((M + 1)/(x + 1))^α / (N + 1)``, ``N`` counted in hours so the
    score does not depend on the bucket length. With the default week and
    ``α = 1`` an account must be about six times bigger than any negative
    poster of the week to reach ``p = 1e-3``.

    The index is the series' own, estimated where it matters (a bucket past
    the record): the Hill estimate on the ``top`` largest hourly maxima of
    the window (the block maxima of a Pareto tail have its index), shrunk
    towards the prior ``tail_index`` with the weight of ``prior_weight``
    excesses (the posterior mean under a gamma prior). Twenty maxima give
    the estimate a standard error of a fifth of itself, so by default the
    prior weighs as much as they do: one odd week does not halve the bar,
    and the index never exceeds twice the prior.
    Follower counts on a large network are close to Zipf (``α`` near 1),
    but not on every channel: where the biggest posters of the week are
    close together, an account nine times the biggest is news, where at
    ``α = 1`` it was not (p 1.3e-3 at a brand of 40 mentions a minute whose
    followers are log-normal; the estimate there is about 1.4).

    Accounts below ``min_followers`` never alert (the floor), nor do buckets
    without a negative mention (``x = 0``, which is not learnt either).

    One bank holds many series (see :class:`detectors.base.Bank`); ``x`` is
    the bucket's largest follower count among negative mentions and ``n`` is
    not used.

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    window
        Memory of the record (default seven days).
    tail_index, prior_weight, top
        The prior Pareto index of follower counts (about 1 on social
        networks), its weight in excesses, and how many of the largest hourly
        maxima estimate the series' own.
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
        prior_weight: float = 20.0,
        top: int = 20,
        min_followers: float = 50_000,
        hold: float = 6 * 3600.0,
        hold_p: float = 1e-3,
    ) -> None:
        super().__init__()
        self.bucket = float(bucket)
        self.warmup = float(warmup)
        self.tail_index = tail_index
        self.prior_weight = prior_weight
        self.top = int(top)
        self.min_followers = min_followers
        # buckets in an hour: N counts hours, whatever the bucket length
        self.per_hour = float(max(1, round(HOUR / self.bucket)))
        self.rec: Records = self._part(Records(max(1, round(window / HOUR))))
        self.hold: Hold = self._part(Hold(hold=hold, hold_p=hold_p))
        self._state("t_first", math.nan)  # first bucket learnt (nan: none yet)
        self._state("last_t", 0.0)  # last bucket learnt

    def is_warm(self, slots: Slots) -> npt.NDArray[np.bool_]:
        """True once ``warmup`` seconds have passed since the slot's first bucket."""
        return self.last_t[slots] - self.t_first[slots] + self.bucket >= self.warmup

    def _evaluate(self, t: float, slots: Slots, x: FloatArray) -> FloatArray:
        """Tail probabilities of the audiences at ``t``, 1 under the floor (no hold)."""
        self.rec.roll(slots, t)  # the window as of t (see Records.peak)
        alpha = np.full(len(slots), self.tail_index)
        beyond = x > self.rec.peak(slots)  # (up to the record p is 1/(N + 1) whatever α)
        if np.count_nonzero(beyond):
            alpha[beyond] = self.index(slots[beyond])
        p = self.rec.tail(slots, x, alpha, self.per_hour)
        return np.where(x < self.min_followers, 1.0, p)

    def index(self, slots: Slots) -> FloatArray:
        """The slots' Pareto index: Hill on the top hourly maxima, shrunk to the prior."""
        k = self.top
        blocks = self.rec.blocks[self._rows(slots)]
        if blocks.shape[1] <= k:
            return np.full(len(slots), self.tail_index)
        high = -np.partition(-blocks, k, axis=1)[:, : k + 1]  # the k + 1 largest, unordered
        floor = high.min(axis=1)
        ok = np.isfinite(floor) & (floor > 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            excess = np.log(high / floor[:, None]).sum(axis=1)  # the floor adds log 1 = 0
        w = self.prior_weight
        return np.where(ok, (w + k) / (w / self.tail_index + np.where(ok, excess, 0.0)),
                        self.tail_index)

    def score(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> FloatArray:
        """``1 − p``; 0 while cold, without a negative mention, or under the floor."""
        p = self._evaluate(t, slots, x)
        self._keep(t, slots, x, n, p)
        p = self.hold.gate(slots, t, p)
        return np.where(self.is_warm(slots), 1.0 - np.maximum(p, P_FLOOR), 0.0)

    def learn(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> None:
        """Add the buckets' largest negative audiences to the records (where there was one)."""
        p = self._kept(t, slots, x, n)
        if p is None:
            p = self._evaluate(t, slots, x)
        self.hold.push(slots, t, np.where(self.is_warm(slots), p, 1.0))
        self.rec.push(slots, t, x, mask=x > 0)
        first = self.t_first[slots]
        self.t_first[slots] = np.where(np.isnan(first), t, first)
        self.last_t[slots] = t

    def bands(self, t: float, p: float, slots: Slots) -> Bands:
        """The records so far as the expectations; the audiences whose tail probability is ``p``."""
        self.rec.roll(slots, t)
        n = self.rec.values(slots) / self.per_hour
        seen = n > 0.0
        m = np.where(seen, self.rec.peak(slots), 0.0)
        # solve ((m + 1)/(x + 1))^α / (n + 1) = p for x
        hi = (m + 1.0) * ((n + 1.0) * p) ** (-1.0 / self.index(slots)) - 1.0
        high = np.where(seen, np.maximum(hi, self.min_followers), float(self.min_followers))
        return Bands(expected=m, low=np.zeros_like(m), high=high)
