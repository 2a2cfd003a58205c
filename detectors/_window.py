"""Bounded sliding-window state shared by the detectors."""

from __future__ import annotations

import math
from array import array

from detectors._stats import P_FLOOR, ew_alpha

__all__ = ["HeldScore", "Hold", "Record"]


class Record:
    """Running maximum of a value over a sliding window, kept as block maxima.

    ``n_blocks`` blocks of ``blk`` pushes each: memory is ``n_blocks`` floats
    whatever the bucket length, and the window maximum is recomputed once per
    block, so a push costs a comparison.
    """

    __slots__ = ("blk", "blocks", "count", "cur", "filled", "i", "past")

    def __init__(self, n_blocks: int, blk: int) -> None:
        self.blk = blk
        self.blocks = array("d", bytes(8 * n_blocks))  # 8 bytes a value
        self.i = 0  # next block slot
        self.filled = 0  # completed blocks
        self.cur = 0.0  # max of the current block so far
        self.count = 0  # pushes into the current block
        self.past = 0.0  # max over completed blocks

    def __getstate__(self) -> tuple:
        return (self.blk, self.blocks, self.count, self.cur, self.filled, self.i, self.past)

    def __setstate__(self, state: tuple) -> None:
        (self.blk, self.blocks, self.count, self.cur, self.filled, self.i, self.past) = state

    def peak(self) -> float:
        """Maximum over the window (completed blocks and the current one)."""
        return self.past if self.past > self.cur else self.cur

    def tail(self, x: float, alpha: float, per: float = 1.0) -> float:
        """``P(X ≥ x)``: ``1/(N + 1)`` at the window maximum, Pareto beyond and below.

        ``N`` is the number of values pushed, divided by ``per`` when they are
        sliding sums overlapping ``per`` pushes each (so ``N`` counts
        independent-ish periods, not buckets).
        """
        n = (self.filled * self.blk + self.count) / per
        if n == 0:
            return 1.0
        m = self.peak()
        r = (m + 1.0) / (x + 1.0)
        p = r**alpha / (n + 1.0)
        return p if p < 1.0 else 1.0

    def push(self, x: float) -> None:
        if self.count == 0 or x > self.cur:
            self.cur = x
        self.count += 1
        if self.count >= self.blk:
            self.blocks[self.i] = self.cur
            self.i = (self.i + 1) % len(self.blocks)
            if self.filled < len(self.blocks):
                self.filled += 1
            self.past = max(self.blocks[: self.filled]) if self.filled < len(self.blocks) else max(
                self.blocks)
            self.cur = 0.0
            self.count = 0


class Hold:
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
    threshold's own factor, not when it merely edges past its peak.

    Examples
    --------
    >>> h = Hold(bucket=300, hold=3600, hold_p=1e-3)
    >>> h.gate(1e-6), h.push(1e-6), h.gate(1e-5), h.gate(1e-8)
    (1e-06, None, 1.0, 1e-08)
    >>> c = Hold(bucket=300, hold=3600, hold_p=1e-3, conditional=True)
    >>> c.push(1e-6); c.gate(1e-5), round(c.gate(1e-8), 6), round(c.gate(1e-10), 6)
    (1.0, 0.01, 0.0001)
    """

    __slots__ = ("conditional", "rec", "surprise")

    def __init__(self, *, bucket: float, hold: float, hold_p: float,
                 conditional: bool = False) -> None:
        blk = max(1, round(3600.0 / bucket))
        self.rec = Record(max(1, round(hold / (blk * bucket))), blk)
        self.surprise = -math.log(hold_p)
        self.conditional = conditional

    def __getstate__(self) -> tuple:
        return (self.rec, self.surprise, self.conditional)

    def __setstate__(self, state: tuple) -> None:
        self.rec, self.surprise = state[0], state[1]
        self.conditional = state[2] if len(state) > 2 else False  # older snapshots

    def gate(self, p: float) -> float:
        """``p`` if it is news; while a bigger surprise is held, 1 (or ``p / p_peak``)."""
        peak = self.rec.peak()
        if peak >= self.surprise:
            if self.conditional:
                q = p * math.exp(peak)
                return q if q < 1.0 else 1.0
            if -math.log(p if p > 1e-300 else 1e-300) <= peak:
                return 1.0
        return p

    def push(self, p: float) -> None:
        """Record the (ungated) tail probability of the bucket just learnt."""
        self.rec.push(-math.log(p if p > 1e-300 else 1e-300))


class HeldScore:
    """``pvalue``/``score_one`` for detectors that gate alerts through a ``Hold``.

    The detector provides ``warm``, ``hold`` and ``_evaluate(x, n)``, which
    returns ``(p, p_model)``: the tail probability in the direction it alerts
    on, and the model's own (before the record test). ``score_one`` keeps
    the evaluation for the ``learn_one`` that follows, which reads it back
    with ``_evaluated``, so a bucket is evaluated once.
    """

    warm: bool
    hold: Hold
    _cache: tuple | None

    def _setup(
        self, *, bucket: float, warmup: float, min_volume: int, window: float,
        half_life: float, hold: float, hold_p: float, clip_z: float, record_window: float,
        record_cap: float,
    ) -> None:
        """State of the two-scale detectors of per-mention values (share, sentiment):
        a bucket record and a pooled record over ``record_window``, the pooled
        window of ``window`` seconds, the EW weight and the excursion hold."""
        self.bucket = float(bucket)
        blk = max(1, round(3600.0 / bucket))
        n_blocks = max(1, round(record_window / (blk * bucket)))
        self.rec1 = Record(n_blocks, blk)
        self.rec_p = Record(n_blocks, blk)
        self.record_cap = record_cap
        self.warmup = float(warmup)
        self.min_volume = int(min_volume)
        self.a = ew_alpha(bucket, half_life)
        self.clip_z = clip_z
        self.k = max(1, round(window / bucket))
        self.hold = Hold(bucket=bucket, hold=hold, hold_p=hold_p)
        self.n_seen = 0  # buckets learnt (with enough volume)
        self.t_first: float | None = None
        self.last_t = 0.0

    def _evaluate(self, x: float, n: float) -> tuple[float, float]:
        raise NotImplementedError

    def pvalue(self, t: float, x: float, n: float = 1.0) -> float:
        """Tail probability of the bucket (every time scale), without the hold."""
        return self._evaluate(x, n)[0]

    def score_one(self, t: float, x: float, n: float = 1.0) -> float:
        """``1 − p``; 0 while cold or when too few mentions stand behind ``x``."""
        if not self.warm:
            return 0.0
        ev = self._evaluate(x, n)
        self._cache = (t, x, n, ev)
        p = self.hold.gate(ev[0])
        return 1.0 - (p if p > P_FLOOR else P_FLOOR)

    def _evaluated(self, t: float, x: float, n: float) -> tuple[float, float]:
        """The evaluation ``score_one`` just made of this bucket (or a fresh one)."""
        c = self._cache
        self._cache = None
        if c is not None and c[:3] == (t, x, n):
            return c[3]
        return self._evaluate(x, n) if self.warm else (1.0, 1.0)


def record_gate(p_model: float, x: float, sd: float, rec: Record, cap: float) -> float:
    """Tail probability that also asks whether ``x`` beats the window's record.

    Why: per-bucket tail probabilities of 1e-3 happen a few times a day at
    one-minute buckets, however well calibrated; a crisis also takes a
    signal past anything it did in the last days. Down to ``cap`` the model's
    ``p`` is returned unchanged (calibrated); deeper, ``p`` is the larger of
    the model's and the record's: ``1/(N + 1)`` at the maximum of the last
    ``N`` values, decaying exponentially with the excess over it in model
    standard deviations ``sd``. ``N`` counts hours (the record keeps hourly
    maxima): buckets a minute apart are not independent chances, and so a
    five-day record has to be beaten by about two standard deviations
    before ``p`` reaches 1e-3, at any bucket length.

    Examples
    --------
    >>> r = Record(4, 1)   # blocks of one push: N counts pushes here
    >>> for v in (0.1, 0.2, 0.15): r.push(v)
    >>> record_gate(1e-9, 0.18, 0.01, r, 1e-2)    # extreme for the model, no record
    0.01
    >>> record_gate(1e-9, 0.35, 0.01, r, 1e-2) < 1e-5    # far past the record
    True
    """
    if p_model >= cap:
        return p_model
    n = rec.filled + rec.count / rec.blk  # hours: neighbouring buckets are not independent
    if n == 0:
        return p_model
    e = (rec.peak() - x) / sd
    p_rec = math.exp(e if e < 700.0 else 700.0) / (n + 1.0)
    if p_rec > cap:
        p_rec = cap
    return p_rec if p_rec > p_model else p_model
