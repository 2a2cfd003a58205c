"""Emerging-term detector (``terms``): crisis words and trending words vs their own baseline."""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import chain, repeat
from operator import methodcaller
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import yaml

from detectors._ring import Ring
from detectors._stats import P_FLOOR, nb_upper_midp
from detectors.base import Bank, FloatArray, Slots

__all__ = ["STOP_WORDS", "Lexicon", "TermDetector", "TermScore", "extract_terms", "load_lexicon"]

DAY = 86400.0
HOUR = 3600.0

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can could couldn't did didn't do does doing don't for from
    further had has have having he her here hers herself him himself his how i i'm if in into
    is isn't it it's its itself just let's me more most my myself no nor not of off on once
    only or other our ours ourselves out over own same she should so some such than that that's
    the their theirs them themselves then there these they this those through to too under
    until up very was wasn't we were what when where which while who whom why will with would
    you you're your yours yourself yourselves rt via amp http https co www com get got im u ur
    lol""".split()  # noqa: SIM905
)


_TOKEN = re.compile(r"#?\w[\w']*")
# Punctuation that separates words (not "#", "'" nor "_"): one C-level substitution
# and a str.split() tokenise a mention about twice as fast as a findall.
_SEPARATORS = re.compile(r"[!-\"$-&(-/:-@\[-^`{-~\u2018-\u201f\u2026]+")
_SINGLE = frozenset("abcdefghijklmnopqrstuvwxyz0123456789#'")


@dataclass(frozen=True, slots=True)
class Lexicon:
    """Crisis terms by category; phrases indexed by their first word for a fast scan."""

    category: dict[str, str]  # term (word or phrase) -> category
    phrases: dict[str, tuple[tuple[str, ...], ...]]  # first word -> phrase token tuples


def load_lexicon(path: str | Path | None = None) -> Lexicon:
    """Read a lexicon YAML (``category: [term, ...]``); the shipped one by default.

    Data, not code: PR and care teams add words without a release, and a
    config can point to its own file.

    Examples
    --------
    >>> lex = load_lexicon()
    >>> lex.category["data breach"], lex.category["recall"]
    ('security', 'safety')
    """
    if path is None:
        text = resources.files("detectors").joinpath("lexicon.yaml").read_text("utf-8")
        where = "detectors/lexicon.yaml"
    else:
        text = Path(path).read_text("utf-8")
        where = str(path)
    raw = yaml.safe_load(text) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of category -> list of terms")
    category: dict[str, str] = {}
    phrases: dict[str, list[tuple[str, ...]]] = {}
    for cat, terms in raw.items():
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise ValueError(f"{where}: category {cat!r} must be a list of strings")
        for term in terms:
            toks = tuple(_TOKEN.findall(term.lower()))
            if not toks:
                continue
            key = " ".join(toks)
            category[key] = str(cat)
            if len(toks) > 1:
                phrases.setdefault(toks[0], []).append(toks)
    return Lexicon(category=category,
                   phrases={k: tuple(sorted(v, key=len, reverse=True)) for k, v in phrases.items()})


_STOP_AND_SINGLE = STOP_WORDS | _SINGLE
_DEFAULT: Lexicon | None = None


def _default_lexicon() -> Lexicon:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_lexicon()
    return _DEFAULT


def extract_terms(text: str, lexicon: Lexicon | None = None) -> list[str]:
    """Terms of a mention: lower-cased words and #hashtags minus stop words, plus lexicon phrases.

    Runs for every mention, so it is one regex substitution and a split, a set lookup per token,
    and a phrase check only for tokens that start a lexicon phrase. Lexicon
    phrases ("not working", "data breach") are added as single terms; their
    words stay as terms too.

    Examples
    --------
    >>> extract_terms("The app is NOT working again #fail, data breach?")
    ['app', 'working', '#fail', 'data', 'breach', 'not working', 'data breach']
    """
    lex = lexicon if lexicon is not None else _default_lexicon()
    toks = _SEPARATORS.sub(" ", text.lower()).split()
    stop = _STOP_AND_SINGLE
    out = [w for w in toks if w not in stop]
    starts = lex.phrases
    hits = starts.keys() & toks  # words that begin a lexicon phrase: usually none
    if hits:
        n = len(toks)
        for i, w in enumerate(toks):
            if w not in hits:
                continue
            for ph in starts[w]:
                m = len(ph)
                if i + m <= n and tuple(toks[i:i + m]) == ph:
                    out.append(" ".join(ph))
                    break
    return out


@dataclass(frozen=True, slots=True)
class TermScore:
    """One term's verdict for a bucket: its category (lexicon) or None, counts and score."""

    term: str
    category: str | None
    observed: int
    expected: float
    score: float


@dataclass(slots=True)
class _Entries:
    """One call's bag entries, flattened: what ``score`` finds and ``learn`` reuses.

    Entry ``j`` is a term of the bag at position ``pos[j]`` with count
    ``counts[j]``, in column ``col[j]`` of its slot's table (−1: not tracked).
    Bag ``i``'s entries are ``start[i]:start[i] + lens[i]``, in bag order.
    """

    pos: npt.NDArray[np.intp]
    col: npt.NDArray[np.intp]
    counts: FloatArray
    lens: npt.NDArray[np.intp]
    start: npt.NDArray[np.intp]
    flat: list[str] | None = None

    def terms(self, bags: Sequence[Mapping[str, int]], idx: npt.NDArray[np.intp]) -> list[str]:
        """The terms of entries ``idx``: most ticks need a few, so only their bags are listed."""
        if self.flat is None and 8 * len(idx) < len(self.pos):
            at = self.pos[idx]
            listed: dict[int, list[str]] = {}
            out = []
            for i, k in zip(at.tolist(), (idx - self.start[at]).tolist(), strict=True):
                keys = listed.get(i)
                if keys is None:
                    keys = listed[i] = list(bags[i])
                out.append(keys[k])
            return out
        if self.flat is None:
            self.flat = list(chain.from_iterable(bags))
        flat = self.flat
        return [flat[j] for j in idx.tolist()]


#: A candidate verdict: (position, term, observed, expected, p).
_Found = tuple[int, str, float, float, float]


class _Verdicts(NamedTuple):
    """A tick's verdicts: what ``score`` returns and what ``learn`` needs of them.

    ``news`` holds each reported term's slot, term and unconditional surprise
    (for the hold); ``hits`` the positions whose bags hold lexicon terms, with
    those terms.
    """

    out: dict[int, list[TermScore]]
    news: list[tuple[int, str, float]]
    hits: list[tuple[int, frozenset[str]]]


_VALUES = methodcaller("values")
_MISSING = repeat(repeat(-1))  # map(get, bag, repeat(-1)): column or −1 for every term


class TermDetector(Bank):
    """Per series: which terms are suddenly far more frequent than their own baseline?

    Why: the words of a crisis (*recall*, *breach*, *outage*, a new
    #hashtag) show up before the volume explodes, and they say which playbook
    to run. Each term's baseline is its share of the series' mentions, an
    exponentially weighted ratio of sums; the expected count in a bucket of
    ``volume`` mentions is ``volume × share``, and the observed count is
    scored under a negative binomial (word use is bursty).

    Lexicon terms and other words differ in what is surprising:

    * a **lexicon** term (a pre-registered crisis word) has a tiny floor share
      (``lexicon_floor``) and modest dispersion, and is tested once per
      lexicon term present: a handful of "data breach" mentions at low volume
      is a crisis;
    * **any other** term has a novelty floor share (``novel_floor``: new words
      appear all the time), high dispersion, and is Bonferroni-corrected for
      the number of distinct terms in the bucket: a merely new word does not
      alert, a word that suddenly fills the timeline does.

    Lexicon terms are also counted over the last ``window`` seconds (against
    the mentions of that window), with a Bonferroni factor of two for the two
    scales: at a brand with a mention a minute no bucket ever holds three
    "data breach" mentions, but an hour can, and for a crisis word that is
    already news. A term that has alerted scores again within ``hold``
    seconds by its probability conditional on the alert (``p / p_alert``):
    a trickle whose count grows every minute alerts once, and again only
    when it is a thousand times (at ``balanced``) more surprising.

    Memory is bounded: each series keeps the ``capacity`` terms with the
    highest decayed counts (batch-pruned Misra–Gries style when it grows 25 %
    past capacity). Counts use forward decay (Cormode et al. 2009): each count
    is stored multiplied by ``2^(t/half_life)`` (relative to a landmark), so
    the share is a plain ratio and no entry is ever touched to decay it.
    Counts are winsorised before they are learnt.

    One bank holds every series (see :class:`detectors.base.Bank`), laid out
    so that a tick of 10,000 series costs milliseconds. A slot's terms map to
    columns of its row of one array of decayed counts, numbered in the order
    they were first kept; the only Python-level work per bag entry is that
    dict lookup, run inside ``map`` (columns are small ints: no int objects
    to touch). Winsorising, learning and the first statistical tests are
    vectorised over all entries, and only terms with ``min_count`` mentions
    are scored at all. The landmark is a whole number of half-lives, moved by
    exact powers of two, so a series gets bit for bit the same scores in any
    bank. The slots of one call must be distinct.

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    lexicon
        A :class:`Lexicon`, or a path to a lexicon YAML; the shipped one by default.
    capacity
        Terms kept per series.
    min_count
        A term needs at least this many mentions in a bucket (a lexicon
        term: or in the window) to score.
    window
        The lexicon terms' second scale (default an hour; the bucket length
        turns it off).
    half_life
        Memory of the term shares.
    threshold
        The alert threshold: ``score`` returns the terms scoring at least
        this, and a term is held from its first such score on (held from a
        lower score, a hashtag climbing for a few buckets was judged against
        its own first, quieter one and never alerted).

    Examples
    --------
    >>> det = TermDetector(bucket=300, warmup=86400)
    >>> t0 = 1_700_000_000
    >>> for i in range(300):     # a day of ordinary chatter, 40 mentions a bucket
    ...     det.learn_terms(t0 + 300 * i, {"coffee": 12, "love": 8, "morning": 5}, 40)
    >>> t = t0 + 300 * 300
    >>> [(s.term, s.category) for s in det.score_terms(t, {"data breach": 4, "coffee": 11}, 40)]
    [('data breach', 'security')]
    >>> det.score_terms(t, {"zyx": 4, "coffee": 11}, 40)    # a new word, no trend
    []
    """

    LEARNT = ("_tables", "_gets", "recent", "_recent_limit", "alerts", "_alerts_limit",
              "_landmark")
    GROWN = ("num",)

    def __init__(
        self,
        *,
        bucket: float = 60.0,
        warmup: float = DAY,
        lexicon: Lexicon | str | Path | None = None,
        capacity: int = 256,
        min_count: int = 3,
        window: float = HOUR,
        half_life: float = 3 * DAY,
        lexicon_floor: float = 1e-4,
        novel_floor: float = 0.02,
        lexicon_dispersion: float = 0.5,
        term_dispersion: float = 2.0,
        hold: float = 6 * 3600.0,
        threshold: float = 0.999,
    ) -> None:
        super().__init__()
        self.bucket = float(bucket)
        self.warmup = float(warmup)
        self.lexicon = (lexicon if isinstance(lexicon, Lexicon)
                        else load_lexicon(lexicon) if lexicon is not None else _default_lexicon())
        self.capacity = max(1, int(capacity))
        self.limit = int(self.capacity * 1.25)  # a slot with more terms is pruned to capacity
        self.min_count = int(min_count)
        self.half_life = float(half_life)
        self.lexicon_floor = lexicon_floor
        self.novel_floor = novel_floor
        self.lexicon_dispersion = lexicon_dispersion
        self.term_dispersion = term_dispersion
        self.hold = float(hold)
        self.threshold = threshold
        self.window = float(window)
        self.k = max(1, round(self.window / self.bucket))  # buckets in the window
        self._lexkeys = frozenset(self.lexicon.category)
        # mentions of the last buckets learnt, for the window's
        self.ring: Ring = self._part(Ring((self.k,)))
        # (slot, lexicon term) -> [(time, count)] of the buckets learnt within the window
        self.recent: dict[tuple[int, str], list[tuple[float, int]]] = {}
        self._recent_limit = 64  # stale keys are dropped when there are more
        self._state("den", 0.0)  # forward-decayed Σ volume
        self._state("t_first", math.nan)  # first bucket learnt (nan: none yet)
        self._state("last_t", 0.0)  # last bucket learnt
        # forward-decayed Σ count per kept term; as wide as the fullest slot needs
        self._state("num", 0.0, (min(8, self.limit),))
        self._tables: list[dict[str, int]] = []  # per slot: term -> column of num
        self._gets: list[Callable[[str, int], int]] = []  # their bound get, made once
        self._landmark: int | None = None  # in half-lives since the epoch
        # (slot, term) -> (time, surprise) of the term's last alert
        self.alerts: dict[tuple[int, str], tuple[float, float]] = {}
        self._alerts_limit = 64  # expired alerts are dropped when there are more

    def add(self) -> int:
        """Make room for one more series; its slot."""
        table: dict[str, int] = {}
        self._tables.append(table)
        self._gets.append(table.get)
        return super().add()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle each slot's terms and counts; not the spare columns nor the shipped lexicon."""
        state = super().__getstate__()
        lengths = np.zeros(len(state["num"]), np.intp)
        lengths[: self.size] = [len(t) for t in self._tables]
        state["num"] = state["num"][np.arange(state["num"].shape[1]) < lengths[:, None]]
        state["_tables"] = [list(t) for t in self._tables]
        del state["_gets"], state["_lexkeys"]
        if self.lexicon is _DEFAULT:
            state["lexicon"] = None  # the shipped lexicon is reloaded, not pickled per bank
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Terms are interned again (one copy of a word for all series)."""
        terms = state.pop("_tables")
        flat = state.pop("num")
        self.__dict__.update(state)
        if self.lexicon is None:
            self.lexicon = _default_lexicon()
        self._lexkeys = frozenset(self.lexicon.category)
        self._tables = [{sys.intern(w): k for k, w in enumerate(ts)} for ts in terms]
        self._gets = [t.get for t in self._tables]
        lengths = np.zeros(self._capacity, np.intp)
        lengths[: len(terms)] = [len(ts) for ts in terms]
        width = max(min(8, self.limit), int(lengths.max()))
        self.num = np.zeros((self._capacity, width))
        self.num[np.arange(width) < lengths[:, None]] = flat

    # -- state ----------------------------------------------------------------------------------
    def is_warm(self, slots: Slots) -> npt.NDArray[np.bool_]:
        """True once ``warmup`` seconds of the slot's buckets have been learnt."""
        return self.last_t[slots] - self.t_first[slots] + self.bucket >= self.warmup

    def n_terms(self, slot: int = 0) -> int:
        """Number of terms the slot keeps (at most 1.25 × ``capacity``)."""
        return len(self._tables[slot]) if slot < self.size else 0

    def share(self, term: str, slot: int = 0) -> float:
        """Learnt share of the slot's mentions that carry ``term`` (0 if not tracked)."""
        if slot >= self.size or self.den[slot] <= 0.0:
            return 0.0
        col = self._tables[slot].get(term)
        return 0.0 if col is None else float(self.num[slot, col] / self.den[slot])

    def expected(self, term: str, volume: float, slot: int = 0) -> float:
        """Expected count of ``term`` in a bucket of ``volume`` mentions (with the floor)."""
        floor = self.lexicon_floor if term in self.lexicon.category else self.novel_floor
        s = self.share(term, slot)
        return volume * (s if s > floor else floor)

    def _weight(self, t: float) -> float:
        """Forward-decay weight ``2^(t/half_life − landmark)`` of a count learnt at ``t``.

        The landmark is a whole number of half-lives and moves (rescaling
        every stored count) only by exact powers of two, before the weights
        could overflow: stored values then differ from another bank's by an
        exact power of two and every share is bit for bit the same.
        """
        q = t / self.half_life
        whole = math.floor(q)
        if self._landmark is None:
            self._landmark = whole
        shift = whole - self._landmark
        if shift > 332:  # 2^332 ≈ 1e100
            self.num[: self.size] = np.ldexp(self.num[: self.size], -shift)
            self.den[: self.size] = np.ldexp(self.den[: self.size], -shift)
            self._landmark = whole
            shift = 0
        return math.ldexp(2.0 ** (q - whole), shift)

    def _widen(self, width: int) -> None:
        """Make every slot's row at least ``width`` columns (doubling, up to ``limit``)."""
        have = self.num.shape[1]
        if width > have:
            wider = np.zeros((len(self.num), min(self.limit, max(width, 2 * have))))
            wider[:, :have] = self.num
            self.num = wider

    # -- one tick -------------------------------------------------------------------------------
    def _entries(self, slots: Slots, bags: Sequence[Mapping[str, int]]) -> _Entries:
        """Flatten the bags and find each term's column: one C-level pass (``map``) per bag."""
        lens = np.fromiter(map(len, bags), np.intp, len(bags))
        total = int(lens.sum())
        getters = list(map(self._gets.__getitem__, slots.tolist()))
        col = np.fromiter(chain.from_iterable(map(map, getters, bags, _MISSING)), np.intp, total)
        counts = np.fromiter(chain.from_iterable(map(_VALUES, bags)), np.float64, total)
        pos = np.repeat(np.arange(len(bags)), lens)
        return _Entries(pos=pos, col=col, counts=counts, lens=lens, start=np.cumsum(lens) - lens)

    def _verdicts(self, t: float, slots: Slots, bags: Sequence[Mapping[str, int]],
                  volumes: FloatArray, ev: _Entries) -> _Verdicts:
        """Scores reaching ``threshold``, by position, and what ``learn`` needs of them."""
        live = self.is_warm(slots) & (volumes > 0)
        found = self._bucket_scale(slots, bags, volumes, ev, live)
        hits: list[tuple[int, frozenset[str]]] = []
        if self.k > 1:  # the bags with a lexicon term: usually few (a C-level test per bag)
            disjoint = np.fromiter(map(self._lexkeys.isdisjoint, bags), bool, len(bags))
            hits = [(i, self._lexkeys.intersection(bags[i]))
                    for i in np.flatnonzero(~disjoint).tolist()]
            if hits:
                found += self._window_scale(t, slots, bags, volumes, live, hits)
        found.sort(key=lambda f: f[4])  # the most surprising scale of a term first
        out: dict[int, list[TermScore]] = {}
        news: list[tuple[int, str, float]] = []
        seen: set[tuple[int, str]] = set()
        for i, w, c, e, p in found:
            if (i, w) in seen:
                continue
            seen.add((i, w))
            owner = int(slots[i])
            p = p if p > P_FLOOR else P_FLOOR  # as a score says it (see Hold.gate)
            s = -math.log(p)
            last = self.alerts.get((owner, w))
            if last is not None and t - last[0] < self.hold:
                if s <= last[1]:
                    continue  # no news: the term already alerted more strongly
                p = math.exp(last[1] - s)  # conditional on the alert: p / p_alert
            score = 1.0 - p
            if score >= self.threshold:
                news.append((owner, w, s))
                out.setdefault(i, []).append(TermScore(
                    term=w, category=self.lexicon.category.get(w), observed=int(c),
                    expected=float(e), score=score))
        for terms in out.values():
            terms.sort(key=lambda ts: ts.score, reverse=True)
        return _Verdicts(out, news, hits)

    def _bucket_scale(self, slots: Slots, bags: Sequence[Mapping[str, int]],
                      volumes: FloatArray, ev: _Entries, live: npt.NDArray[np.bool_]
                      ) -> list[_Found]:
        """The bucket's terms with ``min_count`` mentions that are at all surprising."""
        j = np.flatnonzero((ev.counts >= self.min_count) & live[ev.pos])
        if not len(j):
            return []
        pos, col, c = ev.pos[j], ev.col[j], ev.counts[j]
        owner = slots[pos]
        den = self.den[owner]
        num = np.where(col >= 0, self.num[owner, np.maximum(col, 0)], 0.0)
        share = np.divide(num, den, out=np.zeros_like(num), where=den > 0.0)
        # Before reading any term: drop the entries under two standard deviations
        # even with the lower floor and dispersion of the two kinds (a superset of
        # what the test below keeps), so the usual words of a busy series cost no
        # string work.
        e = volumes[pos] * np.maximum(share, min(self.lexicon_floor, self.novel_floor))
        phi = min(self.lexicon_dispersion, self.term_dispersion)
        maybe = np.flatnonzero(c - e >= 2.0 * np.sqrt(e + phi * e * e))
        if not len(maybe):
            return []
        j, pos, c, share = j[maybe], pos[maybe], c[maybe], share[maybe]
        cat = self.lexicon.category
        terms = ev.terms(bags, j)
        lex = np.fromiter((w in cat for w in terms), bool, len(terms))
        mult = ev.lens[pos].astype(np.float64)  # Bonferroni over distinct terms
        for i in set(pos[lex].tolist()):  # … or over the lexicon terms present, at two scales
            mult[lex & (pos == i)] = (sum(1 for w in bags[i] if w in cat) or 1) * (
                2.0 if self.k > 1 else 1.0)
        floor = np.where(lex, self.lexicon_floor, self.novel_floor)
        e = volumes[pos] * np.where(share > floor, share, floor)
        phi = np.where(lex, self.lexicon_dispersion, self.term_dispersion)
        near = np.flatnonzero(c - e >= 2.0 * np.sqrt(e + phi * e * e))  # under 2 sd: no alert
        p = nb_upper_midp(c[near], e[near], phi[near]) * mult[near]
        return [(int(pos[k]), terms[k], float(c[k]), float(e[k]), pk)
                for k, pk in zip(near.tolist(), p.tolist(), strict=True) if pk < 1.0]

    def _window_scale(self, t: float, slots: Slots, bags: Sequence[Mapping[str, int]],
                      volumes: FloatArray, live: npt.NDArray[np.bool_],
                      hits: list[tuple[int, frozenset[str]]]) -> list[_Found]:
        """Lexicon terms counted over the window (this bucket and those learnt before it)."""
        cutoff = t - self.window + 0.5 * self.bucket
        rows: list[tuple[int, str, float, float, float]] = []
        before = self.ring.sums(slots)[:, 0, 0]
        for i, words in hits:
            if not live[i]:
                continue
            s, bag = int(slots[i]), bags[i]
            pooled = float(before[i] + volumes[i])
            den, get = float(self.den[s]), self._gets[s]
            for w in words:
                c = bag[w] + sum(n for at, n in self.recent.get((s, w), ()) if at > cutoff)
                if c < self.min_count:
                    continue
                col = get(w, -1)
                share = float(self.num[s, col]) / den if col >= 0 and den > 0.0 else 0.0
                rows.append((i, w, float(c), pooled * max(share, self.lexicon_floor),
                             2.0 * len(words)))
        if not rows:
            return []
        c, e, mult = np.array([r[2:] for r in rows]).T
        p = nb_upper_midp(c, e, np.full(len(c), self.lexicon_dispersion)) * mult
        return [(i, w, ci, ei, pk) for (i, w, ci, ei, _), pk in zip(rows, p.tolist(), strict=True)
                if pk < 1.0]

    def score(self, t: float, slots: Slots, bags: Sequence[Mapping[str, int]],
              volumes: FloatArray) -> dict[int, list[TermScore]]:
        """Terms reaching ``threshold``, by position ``i`` in ``slots``, most surprising first.

        ``bags[i]`` maps each term of slot ``slots[i]``'s bucket to its count
        and ``volumes[i]`` is the bucket's number of mentions. Positions that
        are cold, empty or without a surprising term are left out.
        """
        volumes = np.asarray(volumes, np.float64)
        ev = self._entries(slots, bags)
        verdicts = self._verdicts(t, slots, bags, volumes, ev)
        self._keep(t, slots, bags, volumes, (ev, verdicts))
        return verdicts.out

    def learn(self, t: float, slots: Slots, bags: Sequence[Mapping[str, int]],
              volumes: FloatArray) -> None:
        """Add the buckets' term counts to the baselines (winsorised), pruning to capacity.

        Right after ``score`` with the same arguments its lookup and verdicts
        are reused, so a bag must not change in between.
        """
        volumes = np.asarray(volumes, np.float64)
        kept = self._kept(t, slots, bags, volumes)
        if kept is None:
            ev = self._entries(slots, bags)
            verdicts = self._verdicts(t, slots, bags, volumes, ev)
        else:
            ev, verdicts = kept
        self._remember(t, verdicts.news)
        if self.k > 1:
            self._push_window(t, slots, bags, volumes, verdicts.hits)
        g = self._weight(t)
        pos, col, c = ev.pos, ev.col, ev.counts
        den = self.den[slots]
        big = np.flatnonzero(c > 2.0)
        big = big[den[pos[big]] > 0.0]
        if len(big):  # winsorise: a storm must not become the baseline at once
            cb, kb, ib = c[big], col[big], pos[big]
            num = np.where(kb >= 0, self.num[slots[ib], np.maximum(kb, 0)], 0.0)
            cap = 3.0 * volumes[ib] * num / den[ib] + 2.0
            c = c.copy()
            c[big] = np.where(cb > cap, cap, cb)
        add = c * g
        full: list[int] = []
        if (col < 0).any():  # terms new to their slot: give them columns
            col = col.copy()
            full = self._track(slots, bags, ev, col)
        keep = col >= 0  # −1 left: bags that take their slot past the bound
        at = slots[pos[keep]] * self.num.shape[1] + col[keep]
        self.num.reshape(-1)[at] += add[keep]  # (slot, column) pairs are distinct
        self.den[slots] = den + volumes * g
        for i in full:
            a, b = int(ev.start[i]), int(ev.start[i] + ev.lens[i])
            self._overflow(int(slots[i]), ev.col[a:b], add[a:b], list(bags[i]))
        first = self.t_first[slots]
        self.t_first[slots] = np.where(np.isnan(first), t, first)
        self.last_t[slots] = t

    def _push_window(self, t: float, slots: Slots, bags: Sequence[Mapping[str, int]],
                     volumes: FloatArray, hits: list[tuple[int, frozenset[str]]]) -> None:
        """Move the window on: the buckets' mentions into the ring, their lexicon terms listed."""
        self.ring.push(slots, volumes[:, None])
        cutoff = t - self.window + 1.5 * self.bucket  # what the next bucket still counts
        recent = self.recent
        for i, words in hits:
            s, bag = int(slots[i]), bags[i]
            for w in words:
                kept = [e for e in recent.get((s, w), ()) if e[0] > cutoff]
                kept.append((t, bag[w]))
                recent[(s, w)] = kept
        if len(recent) > self._recent_limit:  # amortised: drop the terms gone quiet
            self.recent = {k: v for k, v in recent.items() if v[-1][0] > cutoff}
            self._recent_limit = max(64, 2 * len(self.recent))

    def _remember(self, t: float, news: list[tuple[int, str, float]]) -> None:
        """Record the bucket's alerts (their unconditional surprise) for the hold."""
        for owner, w, s in news:
            self.alerts[(owner, w)] = (t, s)
        if len(self.alerts) > self._alerts_limit:
            self.alerts = {k: a for k, a in self.alerts.items() if t - a[0] < self.hold}
            self._alerts_limit = max(64, 2 * len(self.alerts))  # amortised: O(1) per alert

    def _track(self, slots: Slots, bags: Sequence[Mapping[str, int]], ev: _Entries,
               col: npt.NDArray[np.intp]) -> list[int]:
        """Give the untracked entries (−1 in ``col``) the next columns of their slots.

        Positions whose slot would pass ``limit`` terms are returned instead,
        with all their entries set to −1: :meth:`_overflow` adds and prunes them.
        """
        new = np.flatnonzero(col < 0)
        at = ev.pos[new]
        where, n_new = np.unique(at, return_counts=True)
        tables = self._tables
        after = np.fromiter((len(tables[s]) for s in slots[where].tolist()), np.intp,
                            len(where)) + n_new
        over = after > self.limit
        full = where[over].tolist()
        if not over.all():
            self._widen(int(after[~over].max()))
        if full:
            col[np.isin(ev.pos, full)] = -1
            fits = ~np.isin(at, full)
            new, at = new[fits], at[fits]
        for k, s, w in zip(new.tolist(), slots[at].tolist(), ev.terms(bags, new), strict=True):
            table = tables[s]
            col[k] = c = len(table)  # a small int in the table: no int object to fetch
            table[sys.intern(w)] = c  # one copy of a word for all series
        return full

    def _overflow(self, slot: int, col: npt.NDArray[np.intp], add: FloatArray,
                  words: list[str]) -> None:
        """Add a bag that takes its slot past ``limit`` terms, then keep the ``capacity`` top ones.

        The old terms come first, then the new ones in bag order, and ties
        keep that order: the terms kept are those of adding every count and
        then pruning, but the spare ones never need a column.
        """
        table = self._tables[slot]
        n = len(table)
        known = col >= 0
        vals = np.zeros(n + int((~known).sum()))
        vals[:n] = self.num[slot, :n]
        vals[col[known]] += add[known]
        vals[n:] = add[~known]
        terms = [*table, *(w for w, k in zip(words, known.tolist(), strict=True) if not k)]
        keep = np.argsort(-vals, kind="stable")[: self.capacity]
        table = {sys.intern(terms[k]): j for j, k in enumerate(keep.tolist())}
        self._tables[slot] = table
        self._gets[slot] = table.get
        self._widen(len(keep))
        self.num[slot] = 0.0
        self.num[slot, : len(keep)] = vals[keep]

    # -- one series -----------------------------------------------------------------------------
    def score_terms(self, t: float, terms: Mapping[str, int], volume: float) -> list[TermScore]:
        """Slot 0's terms of the bucket scoring at least ``threshold``, most surprising first."""
        return self.score(t, self._one(), [terms], np.array([float(volume)])).get(0, [])

    def learn_terms(self, t: float, terms: Mapping[str, int], volume: float) -> None:
        """Add a bucket's term counts to slot 0's baseline."""
        self.learn(t, self._one(), [terms], np.array([float(volume)]))
