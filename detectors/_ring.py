"""The last values of each series and their running sums over several spans."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detectors.base import Bank, FloatArray, Slots

__all__ = ["Ring"]


class Ring(Bank):
    """Running sums of the last values of a series over several spans, for many series.

    Why: detectors pool a bucket's value with the buckets before it (the
    five-minute and one-hour counts, a share over half an hour and over three
    hours, a term's hour). A ring of the last values and one running sum per
    span make that O(1) per bucket and series, whatever the spans; the sums
    are re-added from the ring each time it wraps, so float drift never
    builds up.

    A window of span ``k`` is the current bucket and the ``k − 1`` learnt
    before it: :meth:`sums` gives the sums of those ``k − 1`` (0 for a span of
    1), the caller adds the current value, and :meth:`push` learns it. Each
    bucket carries ``fields`` values (say a mass and its mentions) summed
    alike.

    Examples
    --------
    >>> r = Ring(spans=(2, 3))
    >>> s = np.array([r.add()])
    >>> for v in (1.0, 2.0, 4.0):
    ...     r.push(s, np.array([[v]]))
    >>> r.sums(s)[0].tolist()   # the last one, and the last two, of field 0
    [[4.0, 6.0]]
    >>> (r.sums(s)[0, 0] + 8.0).tolist()   # the windows once the next bucket (8) is in
    [12.0, 14.0]
    """

    def __init__(self, spans: Sequence[int], fields: int = 1) -> None:
        super().__init__()
        self.spans = tuple(max(1, int(k)) for k in spans)
        self.fields = int(fields)
        self.length = max(max(self.spans) - 1, 1)  # values kept
        self._state("vals", 0.0, (self.fields, self.length))
        self._state("pos", 0, dtype=np.intp)  # the next position to overwrite (the oldest)
        self._state("acc", 0.0, (self.fields, len(self.spans)))  # the running sums

    def sums(self, slots: Slots) -> FloatArray:
        """Sums of the last ``span − 1`` values: (len(slots), fields, spans)."""
        return self.acc[self._rows(slots)]

    def push(self, slots: Slots, x: FloatArray) -> None:
        """Learn the buckets' values ``x``, shaped (len(slots), fields)."""
        rows, vals, n = self._rows(slots), self.vals, self.length
        j = self.pos[rows]
        acc = self.acc[rows]  # (a view where rows is a slice: written back whole either way)
        # series that tick together share a position: a strided column, not a gather
        same = len(j) > 0 and bool((j == j[0]).all())
        who, at = (rows, int(j[0])) if same else (slots, j)
        for i, k in enumerate(self.spans):
            if k > 1:  # the value k − 1 buckets back leaves this span's sum
                acc[:, :, i] += x - vals[who, :, (at - (k - 1)) % n]
        vals[who, :, at] = x
        j = (j + 1) % n
        self.pos[rows] = j
        wrapped = j == 0
        if np.count_nonzero(wrapped):  # re-add against float drift, once per turn
            w = rows if same else slots[wrapped]  # (the whole ring is in order now)
            for i, k in enumerate(self.spans):
                acc[wrapped, :, i] = vals[w, :, n - (k - 1):].sum(axis=2) if k > 1 else 0.0
        self.acc[rows] = acc
