"""The interface every crisisd detector implements.

A detector watches one signal of one series, in river's style: for each closed
bucket the pipeline calls ``score_one(t, x, n)`` and then ``learn_one(t, x, n)``.
``x`` is the signal's value and ``n`` its exposure: the number of mentions the
value is made of (1 for a plain count such as volume). A share or a mean is
more certain when more mentions stand behind it; ``n`` is how a detector knows.

Scores are calibrated: ``score_one`` returns ``1 − p`` where ``p`` is the
(upper or lower, whichever the observation is in) tail probability of ``x``
under the detector's learned normal model. The same threshold therefore means
the same false-alarm rate on every series and signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Band:
    """The detector's expectation for one bucket: centre and normal band.

    ``low``/``high`` are the quantiles of the normal model at the tail
    probability asked for (the alert threshold's), used to explain anomalies.
    """

    expected: float
    low: float
    high: float


@runtime_checkable
class Detector(Protocol):
    """One signal of one series. Picklable, bounded in memory."""

    @property
    def warm(self) -> bool:
        """Whether the baseline is learnt well enough for the score to alert."""

    def score_one(self, t: float, x: float, n: float = 1.0) -> float:
        """Calibrated anomaly score of ``x`` at event time ``t``, in [0, 1]."""

    def learn_one(self, t: float, x: float, n: float = 1.0) -> None:
        """Update the baseline with the observation (after scoring it)."""

    def band(self, t: float, p: float) -> Band:
        """Expected value and the central ``1 − 2p`` band at time ``t``."""
