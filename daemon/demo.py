"""The demo stream: a synthetic week of mentions of a fictional brand.

Northwind Appliances is talked about on two channels with the rhythm real
mention streams have — a daily cycle that nearly falls silent at night,
quieter weekends, over-dispersed counts, a mix of praise, questions and
complaints. On the sixth day a product-safety story breaks: an influential
account posts about a kettle that burnt a child, the echo follows within
minutes, and for three hours the conversation is about recalls and burns.

The generator is seeded, so the demo prints the same incident every time.
Most mentions carry a sentiment score (as a social-listening feed would);
one in ten does not, so the pipeline scores those itself with VADER.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from detectors.volume import WEEK_OFFSET_DAYS

BRAND = "northwind"
START = 1772409600.0  # 2026-03-02 00:00 UTC, a Monday
DAY = 86400.0
CRISIS_AT = START + 5 * DAY + 14 * 3600 + 5 * 60  # Saturday 14:05 UTC

PRODUCTS = ["kettle", "toaster", "blender", "air fryer", "coffee maker", "mixer"]
NORMAL = [
    ("Just got my new {b} {p} and it's great, love the design", 0.8),
    ("{b} {p} makes mornings so much better, highly recommend", 0.7),
    ("Does anyone know if the {b} {p} is dishwasher safe?", 0.0),
    ("Looking at the {b} {p} vs the competition, any thoughts?", 0.0),
    ("{b} support sorted my {p} warranty in ten minutes, thanks!", 0.6),
    ("My {b} {p} stopped working after a month, disappointed", -0.6),
    ("Still waiting on my {b} {p} delivery, a week late now", -0.4),
    ("The {b} {p} is on sale this weekend", 0.2),
    ("Unboxing the {b} {p} tonight #kitchen", 0.1),
    ("{b} customer service never answers the phone, annoying", -0.5),
]
CRISIS = [
    ("My daughter got burned when the Northwind kettle lid flew open. This is unsafe! #recall",
     -0.9),
    ("Northwind kettle exploded on the stove, boiling water everywhere. Burn injury. Recall it now",
     -0.9),
    ("Why hasn't Northwind issued a recall for the kettle? Kids are getting burned "
     "#NorthwindRecall", -0.8),
    ("Third story today of a Northwind kettle causing burns. Unsafe product, do not buy", -0.8),
    ("Is the Northwind kettle safe? Seeing reports of burns and a possible recall", -0.5),
    ("Returning my Northwind kettle after the burn reports. #NorthwindRecall", -0.6),
    ("Northwind stay silent while customers get injured by their kettle. Shameful", -0.9),
]
AUTHORS = [f"user{i:04d}" for i in range(3000)]


@dataclass(frozen=True, slots=True)
class Traffic:
    """The normal rhythm of a brand's mentions: how many, when, how bursty.

    ``peak`` mentions a minute at the daily high (about 14:00 at ``utc_offset``
    hours from UTC), ``night`` of that at the low, ``weekend`` of the weekday
    level on Saturdays and Sundays, ``growth`` a day of slow linear growth
    from the stream's start. Counts are Gamma–Poisson with shape ``shape``: the smaller,
    the more over-dispersed. ``wander`` is the standard deviation of the log
    of the rate's slow drift (news cycles, a busy day), an Ornstein–Uhlenbeck
    process with a correlation time of ``wander_hours``: minute-by-minute
    over-dispersion averages out within the hour, while real mention streams
    stray from their daily rhythm for hours (NAB's ten Twitter series: hourly
    counts off their hour-of-week median by a robust 0.18 to 0.60 in log,
    0.43 at the median, correlated 0.3 to 0.65 an hour apart). ``unscored`` of
    the mentions come without a sentiment score, for the pipeline's own scorer.
    """

    peak: float = 6.0
    night: float = 0.15
    weekend: float = 0.7
    growth: float = 0.02
    utc_offset: float = 0.0
    shape: float = 8.0
    wander: float = 0.0
    wander_hours: float = 3.0
    unscored: float = 0.1

    def is_weekend(self, ts: float) -> bool:
        """Whether ``ts`` falls on a Saturday or Sunday in the brand's time zone."""
        local = ts + self.utc_offset * 3600.0
        return int(local // DAY + WEEK_OFFSET_DAYS) % 7 >= 5

    def rate(self, ts: float, start: float) -> float:
        """Expected mentions per minute at ``ts``: daily cycle, weekend dip, slow growth."""
        hour = ((ts + self.utc_offset * 3600.0) % DAY) / 3600.0
        daily = self.night + (1.0 - self.night) * max(
            0.0, math.sin(math.pi * (hour - 6.0) / 16.0)) ** 1.5
        weekly = self.weekend if self.is_weekend(ts) else 1.0
        growth = 1.0 + self.growth * (ts - start) / DAY
        return self.peak * daily * weekly * growth


@dataclass(frozen=True, slots=True)
class Storm:
    """A crisis breaking in the stream: when, on which channel, what people say.

    ``spark`` is the first, high-reach mention that sets it off (optional).
    The extra volume rises to about ``peak`` mentions a minute with time
    constant ``rise`` minutes and decays with ``decay`` minutes (minutes and
    hours for a storm; hours and hours for a slow burn), or stops after
    ``duration`` seconds.
    """

    at: float
    channel: str
    texts: list[tuple[str, float]]
    peak: float = 60.0
    spark: dict[str, Any] | None = None
    duration: float | None = None
    rise: float = 8.0
    decay: float = 90.0

    def rate(self, ts: float) -> float:
        """Extra mentions per minute at ``ts``: fast rise, slow decay (and an end)."""
        dt = (ts - self.at) / 60.0
        if dt < 0 or (self.duration is not None and dt * 60.0 >= self.duration):
            return 0.0
        return self.peak * (1.0 - math.exp(-dt / self.rise)) * math.exp(-dt / self.decay)


RECALL = Storm(
    at=CRISIS_AT,
    channel="twitter",
    texts=CRISIS,
    spark={
        "id": "twitter-spark",
        "ts": CRISIS_AT - 30.0,
        "channel": "twitter",
        "text": "PSA: a Northwind kettle just burned my nephew. The lid pops open "
        "when it boils. Unsafe. @Northwind this needs a recall.",
        "author": "homesafetymom",
        "followers": 412000,
        "sentiment": -0.88,
        "lang": "en",
        "url": "https://example.invalid/twitter/spark",
    },
)
"""The demo's crisis: a kettle that burns, on Saturday afternoon."""


def _mention(
    rng: random.Random, ts: float, n: int, template: tuple[str, float], brand: str, channel: str,
    unscored: float,
) -> dict[str, Any]:
    text, tone = template
    followers = int(rng.lognormvariate(5.0, 1.6))
    record: dict[str, Any] = {
        "id": f"{channel}-{n}",
        "ts": round(ts, 3),
        "brand": brand,
        "channel": channel,
        "text": text.format(b=brand.title(), p=rng.choice(PRODUCTS)),
        "author": rng.choice(AUTHORS),
        "followers": followers,
        "lang": "en",
        "url": f"https://example.invalid/{channel}/{n}",
    }
    if rng.random() >= unscored:
        record["sentiment"] = max(-1.0, min(1.0, round(tone + rng.gauss(0, 0.15), 3)))
    return record


def mentions(
    seed: int = 7,
    days: float = 7,
    *,
    brand: str = BRAND,
    start: float = START,
    storm: Storm | None = RECALL,
    traffic: Traffic = Traffic(),
    channels: tuple[tuple[str, float], ...] = (("twitter", 0.75), ("facebook", 0.25)),
) -> Iterator[dict[str, Any]]:
    """The stream, in time order, as JSON-ready mention records.

    The defaults are the demo week; ``crisisd drill`` passes its own brand,
    start and storm to rehearse a playbook through the whole pipeline, and
    ``bench/bench_scenarios.py`` many brands' traffic, with or without one.
    """
    rng = random.Random(seed)
    n = 0
    spark = dict(storm.spark, brand=brand) if storm and storm.spark else None
    drift, keep = 0.0, math.exp(-1.0 / (60.0 * traffic.wander_hours))
    for minute in range(int(days * DAY / 60)):
        t0 = start + minute * 60.0
        level = 1.0
        if traffic.wander > 0.0:  # the slow drift, in log, mean 1 in the rate
            drift = keep * drift + math.sqrt(1.0 - keep * keep) * rng.gauss(0.0, traffic.wander)
            level = math.exp(drift - traffic.wander**2 / 2.0)
        for channel, share in channels:
            # Gamma-Poisson: counts over-dispersed like real mention volume.
            lam = rng.gammavariate(traffic.shape,
                                   level * traffic.rate(t0, start) * share / traffic.shape)
            count = _poisson(rng, lam)
            crisis = _poisson(rng, storm.rate(t0)) if storm and channel == storm.channel else 0
            stamps = sorted(t0 + rng.random() * 60.0 for _ in range(count + crisis))
            kinds = [False] * count + [True] * crisis
            rng.shuffle(kinds)
            for ts, is_crisis in zip(stamps, kinds, strict=True):
                n += 1
                template = rng.choice(storm.texts if storm and is_crisis else NORMAL)
                yield _mention(rng, ts, n, template, brand, channel, traffic.unscored)
        if spark is not None and t0 <= spark["ts"] < t0 + 60.0:
            n += 1
            yield spark


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method; rates here are small)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def write(path: Path, seed: int = 7, days: float = 7, **stream: Any) -> int:
    """Write the stream as JSON lines; the number of mentions written.

    ``stream`` takes the keyword arguments of ``mentions``.
    """
    encode = msgspec.json.encode
    count = 0
    with path.open("wb") as fh:
        for record in mentions(seed, days, **stream):
            fh.write(encode(record) + b"\n")
            count += 1
    return count
