"""The interface every crisisd detector implements: one signal across many series.

A detector is a *bank*: the state of one signal for every series it watches,
held as numpy arrays whose first axis is the series' slot. Why: the daemon
watches thousands of series (brand × channel) and scores all of them on every
bucket tick; one vectorised update of 10,000 slots costs about what one
Python-object update costs ten times over, so a tick stays within
milliseconds. The arithmetic is the same as for one series, river-style, and
``score_one`` / ``learn_one`` / ``warm`` drive slot 0 for code (and doctests)
that watch a single series.

For each closed bucket the pipeline calls ``score(t, slots, x, n)`` and then
``learn(t, slots, x, n)`` with the same arrays. ``x`` is the signal's value
and ``n`` its exposure: the number of mentions the value is made of (1 for a
plain count such as volume). A share or a mean is more certain when more
mentions stand behind it; ``n`` is how a detector knows. All series of one
call share the bucket start ``t`` (the daemon ticks series of one bucket
length and alignment together), so seasonal positions are scalars.

Scores are calibrated: ``score`` returns ``1 − p`` where ``p`` is the tail
probability (in the direction the detector alerts on) of ``x`` under the
detector's learned normal model. The same threshold therefore means the same
false-alarm rate on every series and signal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Band", "Bands", "Bank", "Detector", "FloatArray", "Slots"]

Slots = npt.NDArray[np.intp]
FloatArray = npt.NDArray[np.float64]

_SLOT0: Slots = np.zeros(1, np.intp)
_SLOT0.setflags(write=False)


@dataclass(frozen=True, slots=True)
class Band:
    """The detector's expectation for one bucket: centre and normal band.

    ``low``/``high`` are the quantiles of the normal model at the tail
    probability asked for (the alert threshold's), used to explain anomalies.
    When the value judged was pooled over the last ``window`` seconds rather
    than the bucket's own, ``observed`` is that pooled value and the band is
    for it: "a share of 55 % over the last half hour" explains an alert that
    the bucket's share alone would not.
    """

    expected: float
    low: float
    high: float
    observed: float | None = None
    window: float = 0.0


class Bands(NamedTuple):
    """The bands of many slots at once, one array per bound.

    Why: ``GET /series`` lists every series' band; asked slot by slot, the
    bands of 10,000 series held the daemon's loop for most of a second.
    """

    expected: FloatArray
    low: FloatArray
    high: FloatArray

    def at(self, i: int) -> Band:
        """Position ``i``'s band."""
        return Band(expected=float(self.expected[i]), low=float(self.low[i]),
                    high=float(self.high[i]))


@runtime_checkable
class Detector(Protocol):
    """One signal of many series. Picklable, bounded in memory per series."""

    size: int

    def add(self) -> int:
        """Make room for one more series; its slot."""

    def is_warm(self, slots: Slots) -> npt.NDArray[np.bool_]:
        """Whether each slot's baseline is learnt well enough for its score to alert."""

    def score(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> FloatArray:
        """Calibrated anomaly scores in [0, 1] of the slots' values at bucket start ``t``."""

    def learn(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> None:
        """Update the slots' baselines with the observations (after scoring them)."""

    def bands(self, t: float, p: float, slots: Slots) -> Bands:
        """The slots' expected values and their central ``1 − 2p`` bands at time ``t``."""

    def band(self, t: float, p: float, slot: int = 0) -> Band:
        """One slot's expected value and central ``1 − 2p`` band at ``t`` (``bands`` of one)."""

    def evidence(self, t: float, p: float, slot: int = 0) -> Band:
        """The band that explains the slot's score at ``t`` (between ``score`` and ``learn``).

        The bucket's band, or that of the pooled window the score was decided on.
        """

    def current(self, t: float, p: float, slot: int = 0) -> Band:
        """Where the signal is now: the band of the bucket, or of a short window, at ``t``.

        Between ``score`` and ``learn``, like ``evidence``. The bucket's band,
        or, where the bucket had too few mentions to be tested, that of the
        shortest pooled window that had enough (with its level as
        ``observed``); a longer, lagging window only at a series whose
        shorter windows are typically under the floor.
        """

    def schema(self) -> tuple[Any, ...]:
        """What a snapshot of this detector's state must match to be taken over."""

    def take_state(self, old: Any) -> None:
        """Take over what ``old``, of the same schema, learnt; keep these settings."""


class Bank:
    """Storage of per-series state as arrays indexed by slot, grown on demand.

    Subclasses declare each per-series quantity once in ``__init__`` with
    :meth:`_state` (its initial value, its shape per series) and each nested
    bank with :meth:`_part`; :meth:`add` then grows all of them together, so a
    slot means the same series everywhere. Slots are never freed: a series
    seen once is watched for the life of the daemon (its silence is data).

    Examples
    --------
    >>> class Counts(Bank):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self._state("total", 0.0)
    >>> c = Counts()
    >>> [c.add() for _ in range(3)], c.total[:c.size].tolist()
    ([0, 1, 2], [0.0, 0.0, 0.0])
    """

    size: int

    #: The meaning of this bank's state: bump it when a change reads or updates the
    #: state differently while its arrays stay the same, so that a snapshot of the old
    #: state restarts this bank cold (see :meth:`schema`) instead of being misread.
    VERSION = 1
    #: What the bank learns besides its per-series arrays and its parts (all the rest of
    #: its attributes are settings, taken from the configuration it is built with).
    LEARNT: tuple[str, ...] = ()
    #: Per-series arrays whose width grows with the data (not part of the schema).
    GROWN: tuple[str, ...] = ()
    #: Per-series arrays added since this VERSION's first release, whose fill means
    #: "nothing learnt yet" to the code that reads them: a snapshot taken before them
    #: is taken over with them at their fill (not part of the schema), so an upgrade
    #: that only adds such an array does not restart the bank cold.
    ADDED: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.state_version = type(self).VERSION  # pickled with the state: the snapshot's own
        self.size = 0
        self._all_of: Slots | None = None  # the slots array known to be every slot in order
        self._capacity = 1
        self._fills: dict[str, Any] = {}
        self._parts: list[Bank] = []

    def _state(
        self, name: str, fill: float, shape: tuple[int, ...] = (), dtype: Any = np.float64
    ) -> None:
        """Declare a per-series array ``name`` (``shape`` per series), initially ``fill``."""
        setattr(self, name, np.full((self._capacity, *shape), fill, dtype))
        self._fills[name] = fill

    def _part(self, bank: Bank) -> Any:
        """Declare a nested bank that grows with this one; returns it."""
        self._parts.append(bank)
        return bank

    def add(self) -> int:
        """Make room for one more series; its slot (0, 1, 2, … in order)."""
        slot = self.size
        if slot >= self._capacity:
            self._capacity = max(8, 2 * self._capacity)
            for name, fill in self._fills.items():
                old = getattr(self, name)
                new = np.full((self._capacity, *old.shape[1:]), fill, old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        for part in self._parts:
            part.add()
        self.size = slot + 1
        self._all_of = None
        return slot

    def schema(self) -> tuple[Any, ...]:
        """What a bank's state must match to be taken over by this bank.

        The class, the state's version, each per-series array's name, type
        and shape per series, the other learnt attributes it has, and the
        same of each part: a snapshot saved by code whose detector differed
        (another array, another number of profile knots, a learnt attribute
        added, a bumped :attr:`VERSION`) does not match, and that
        one bank starts cold while the others resume warm. A bank pickled
        before versions were kept is version 1.
        """
        arrays = tuple(sorted(
            (name, getattr(self, name).dtype.str,
             getattr(self, name).ndim if name in self.GROWN else getattr(self, name).shape[1:])
            for name in self._fills if name not in self.ADDED))
        learnt = tuple(name for name in self.LEARNT if name in self.__dict__)
        version = self.__dict__.get("state_version", 1)
        parts = tuple(p.schema() for p in self._parts)
        return type(self).__module__, type(self).__qualname__, version, arrays, learnt, parts

    def take_state(self, old: Bank) -> None:
        """Take over what ``old`` (of the same :meth:`schema`) learnt, keeping these settings.

        Why: a restart restores the detectors from a snapshot, but the
        configuration may have changed since (sensitivity, warm-up, the
        floor, the crisis lexicon). A bank built from the configuration
        takes the learnt state, so the new settings apply and nothing is
        relearnt.
        """
        for name in ("size", "_capacity", *self.LEARNT, *self._fills):
            if name in self.ADDED and name not in old.__dict__:  # saved before it was added
                mine = getattr(self, name)
                value = np.full((old._capacity, *mine.shape[1:]), self._fills[name], mine.dtype)
            else:
                value = getattr(old, name)
            setattr(self, name, value)
        self._all_of = None
        for part, was in zip(self._parts, old._parts, strict=True):
            part.take_state(was)

    def _rows(self, slots: Slots) -> Slots | slice:
        """``slots`` as a slice when they are every slot in order, else themselves.

        Why: the daemon ticks every series of a bank together, in slot order,
        with the same ``slots`` array each time; indexing a per-series array
        with a slice reads a view and writes in place, a fraction of the cost
        of a gather and a scatter. Only for indexing rows alone (or with a
        scalar column): ``a[rows, cols]`` with a slice and an array is an
        outer product, not pairs.
        """
        if slots is self._all_of:
            return slice(0, self.size)
        if len(slots) == self.size and np.array_equal(slots, np.arange(self.size)):
            self._all_of = slots
            return slice(0, self.size)
        return slots

    # -- score then learn: one evaluation per bucket ------------------------------
    def _keep(self, t: float, slots: Slots, x: FloatArray, n: FloatArray, ev: Any) -> None:
        """Remember ``score``'s evaluation of these arrays for the ``learn`` that follows."""
        self._kept_ev = (t, slots, x, n, ev)

    def _scored(self, t: float, slot: int) -> tuple[int, Any] | None:
        """Where ``slot`` was in the arrays ``score`` just evaluated at ``t``, and that
        evaluation (left for ``learn``); None if it was not scored at ``t``."""
        kept = getattr(self, "_kept_ev", None)
        if kept is None or kept[0] != t:
            return None
        at = np.flatnonzero(kept[1] == slot)
        return (int(at[0]), kept[4]) if len(at) else None

    def _kept(self, t: float, slots: Slots, x: FloatArray, n: FloatArray) -> Any:
        """The evaluation ``score`` just made of these arrays, or None (then evaluate afresh)."""
        kept = getattr(self, "_kept_ev", None)
        self._kept_ev = None
        if kept is None or kept[0] != t or kept[1] is not slots:
            return None
        if (kept[2] is x or np.array_equal(kept[2], x)) and (
                kept[3] is n or np.array_equal(kept[3], n)):
            return kept[4]
        return None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle only the slots in use (capacity is regrown on demand)."""
        state = dict(self.__dict__)
        state["_kept_ev"] = None
        state["_all_of"] = None
        keep = max(self.size, 1)
        for name in self._fills:
            state[name] = state[name][:keep].copy()
        state["_capacity"] = keep
        return state

    def band(self, t: float, p: float, slot: int = 0) -> Band:
        """One slot's expected value and central ``1 − 2p`` band at ``t``: ``bands`` of one."""
        return self.bands(t, p, np.array([slot], np.intp)).at(0)  # type: ignore[attr-defined]

    def evidence(self, t: float, p: float, slot: int = 0) -> Band:
        """The band that explains the slot's score at ``t``: the bucket's, unless overridden.

        A detector that judges pooled windows too says which one decided.
        """
        return self.band(t, p, slot)  # type: ignore[attr-defined]

    def current(self, t: float, p: float, slot: int = 0) -> Band:
        """Where the signal is now: the bucket's band, unless overridden.

        A detector that pools windows for buckets too small to judge says
        which window, and its level.
        """
        return self.band(t, p, slot)  # type: ignore[attr-defined]

    # -- one series, river-style ----------------------------------------------
    def _one(self) -> Slots:
        if self.size == 0:
            self.add()
        return _SLOT0

    def score_one(self, t: float, x: float, n: float = 1.0) -> float:
        """Score of one series' value (slot 0): ``score`` for a bank of one."""
        scores = self.score(t, self._one(), np.array([x], float), np.array([n], float))  # type: ignore[attr-defined]
        return float(scores[0])

    def learn_one(self, t: float, x: float, n: float = 1.0) -> None:
        """Learn one series' value (slot 0): ``learn`` for a bank of one."""
        self.learn(t, self._one(), np.array([x], float), np.array([n], float))  # type: ignore[attr-defined]

    @property
    def warm(self) -> bool:
        """Whether slot 0's baseline is ready (``is_warm`` for a bank of one)."""
        return bool(self.is_warm(self._one())[0])  # type: ignore[attr-defined]
