"""Emerging-term detector (``terms``): crisis words and trending words vs their own baseline."""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from detectors._stats import P_FLOOR, nb_upper_midp

__all__ = ["STOP_WORDS", "Lexicon", "TermDetector", "TermScore", "extract_terms", "load_lexicon"]

DAY = 86400.0

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


class TermDetector:
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

    Memory is bounded: the table keeps the ``capacity`` terms with the highest
    decayed counts (batch-pruned Misra–Gries style when it grows 25 % past
    capacity). Counts use forward decay (Cormode et al. 2009): each count is
    stored multiplied by ``2^(t/half_life)``, so the share is a plain ratio and
    no entry is ever touched to decay it. Counts are winsorised before they
    are learnt, and a term that has alerted scores again within ``hold``
    seconds only if it is more surprising than before.

    Parameters
    ----------
    bucket, warmup
        Bucket length and warm-up, in seconds.
    lexicon
        A :class:`Lexicon`, or a path to a lexicon YAML; the shipped one by default.
    capacity
        Terms kept per series.
    min_count
        A term needs at least this many mentions in a bucket to score.
    half_life
        Memory of the term shares.
    report
        ``score_terms`` returns terms scoring at least this.

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

    def __init__(
        self,
        *,
        bucket: float = 60.0,
        warmup: float = DAY,
        lexicon: Lexicon | str | Path | None = None,
        capacity: int = 256,
        min_count: int = 3,
        half_life: float = 3 * DAY,
        lexicon_floor: float = 1e-4,
        novel_floor: float = 0.02,
        lexicon_dispersion: float = 0.5,
        term_dispersion: float = 2.0,
        hold: float = 6 * 3600.0,
        report: float = 0.99,
    ) -> None:
        self.bucket = float(bucket)
        self.warmup = float(warmup)
        self.lexicon = (lexicon if isinstance(lexicon, Lexicon)
                        else load_lexicon(lexicon) if lexicon is not None else _default_lexicon())
        self.capacity = int(capacity)
        self.min_count = int(min_count)
        self.half_life = float(half_life)
        self.lexicon_floor = lexicon_floor
        self.novel_floor = novel_floor
        self.lexicon_dispersion = lexicon_dispersion
        self.term_dispersion = term_dispersion
        self.hold = float(hold)
        self.report = report
        self.t0: float | None = None  # forward-decay landmark
        self.last_t = 0.0
        self.den = 0.0  # forward-decayed Σ volume
        self.num: dict[str, float] = {}  # term -> forward-decayed Σ count
        self.alerts: dict[str, tuple[float, float]] = {}  # term -> (time, surprise) of last alert
        self._cache: tuple | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = None
        if self.lexicon is _DEFAULT:
            state["lexicon"] = None  # the shipped lexicon is reloaded, not pickled per series
        return state

    def __setstate__(self, state: dict) -> None:
        state["num"] = {sys.intern(w): v for w, v in state["num"].items()}
        self.__dict__.update(state)
        if self.lexicon is None:
            self.lexicon = _default_lexicon()

    @property
    def warm(self) -> bool:
        """True once ``warmup`` seconds of buckets have been learnt."""
        return self.t0 is not None and self.last_t - self.t0 + self.bucket >= self.warmup

    def _g(self, t: float) -> float:
        return 2.0 ** ((t - self.t0) / self.half_life) if self.t0 is not None else 1.0

    def share(self, term: str) -> float:
        """Learnt share of mentions that carry ``term`` (0 if not tracked)."""
        if self.den <= 0.0:
            return 0.0
        return self.num.get(term, 0.0) / self.den

    def expected(self, term: str, volume: float) -> float:
        """Expected count of ``term`` in a bucket of ``volume`` mentions (with the floor)."""
        floor = self.lexicon_floor if term in self.lexicon.category else self.novel_floor
        s = self.share(term)
        return volume * (s if s > floor else floor)

    def score_terms(self, t: float, terms: dict[str, int], volume: int) -> list[TermScore]:
        """Terms of the bucket scoring at least ``report``, most surprising first."""
        if not self.warm or volume <= 0:
            return []
        cat = self.lexicon.category
        mc = self.min_count
        cands = [(w, c) for w, c in terms.items() if c >= mc]
        if not cands:
            return []
        n_lex = sum(1 for w in terms if w in cat) or 1
        n_all = len(terms)
        out = []
        for w, c in cands:
            category = cat.get(w)
            e = self.expected(w, volume)
            phi, mult = ((self.lexicon_dispersion, n_lex) if category is not None
                         else (self.term_dispersion, n_all))
            if c - e < 2.0 * math.sqrt(e + phi * e * e):
                continue  # under two standard deviations: never near an alert
            p = nb_upper_midp(c, e, phi) * mult
            if p >= 1.0:
                continue
            s = -math.log(p if p > 1e-300 else 1e-300)
            last = self.alerts.get(w)
            if last is not None and t - last[0] < self.hold and s <= last[1]:
                continue  # no news: the term already alerted more strongly
            score = 1.0 - (p if p > P_FLOOR else P_FLOOR)
            if score >= self.report:
                out.append(TermScore(term=w, category=category, observed=int(c), expected=e,
                                     score=score))
        out.sort(key=lambda ts: ts.score, reverse=True)
        self._cache = ((t, id(terms), volume), out)
        return out

    def learn_terms(self, t: float, terms: dict[str, int], volume: int) -> None:
        """Add a bucket's term counts to the baselines (winsorised), pruning to capacity."""
        if self.t0 is None:
            self.t0 = t
        warm = self.warm
        self.last_t = t
        g = self._g(t)
        if warm:  # remember this bucket's alerts for the hold
            c = self._cache
            scored = c[1] if c is not None and c[0] == (t, id(terms), volume) else (
                self.score_terms(t, terms, volume))
            self._cache = None
            for ts in scored:
                self.alerts[ts.term] = (t, -math.log(max(1.0 - ts.score, 1e-300)))
            if len(self.alerts) > 64:
                self.alerts = {w: a for w, a in self.alerts.items() if t - a[0] < self.hold}
        num = self.num
        den = self.den
        for w, c in terms.items():
            if c > 2 and den > 0.0:  # winsorise: a storm must not become the baseline at once
                cap = 3.0 * volume * num.get(w, 0.0) / den + 2.0
                if c > cap:
                    c = cap
            old = num.get(w)
            if old is None:  # one copy of a word for all series (memory, not speed)
                num[sys.intern(w)] = c * g
            else:
                num[w] = old + c * g
        self.den = den + volume * g
        if len(num) > self.capacity * 1.25:
            keep = sorted(num.items(), key=lambda kv: kv[1], reverse=True)[: self.capacity]
            self.num = dict(keep)
        if g > 1e100:  # move the landmark before the floats overflow
            self.num = {w: v / g for w, v in self.num.items()}
            self.den /= g
            self.t0 = t
