"""Falls: is a day at a fraction of its mentions reported, and what else alerts?

``volume`` reports an hour far short of its mentions (the feed thinned, or
the brand gone quiet: ``detectors._shortfall.Shortfall``). This runs the
volume detector, as the registry builds it, over generated minute counts
of many series (three sizes, three night and weekend shapes, the log rate
drifting for hours as ``bench_scenarios`` draws it) and thins one weekday
of each, from midnight, to ``--factor`` of its mentions: a feed delivering
a tenth, or a quiet holiday. It prints how many of those days were
reported as a fall and how soon, the rises alerted on that day and the
next (the return of the usual traffic must not read as a storm), and the
false rises and falls on every other day after the warm-up.

Usage::

    .venv/bin/python bench/bench_falls.py                    # a day at a tenth
    .venv/bin/python bench/bench_falls.py --factor 1         # no thinned day: false alerts only
    .venv/bin/python bench/bench_falls.py --factor 0.35 --wander 0
    .venv/bin/python bench/bench_falls.py --factor 1 --utc-offset -5   # brands far from UTC
    .venv/bin/python bench/bench_falls.py --factor 1 --utc-offset -5 --clock-change 10
    .venv/bin/python bench/bench_falls.py --factor 0.5 --holiday   # a holiday in the calendar
    .venv/bin/python bench/bench_falls.py --day 9    # in the second week, a weekday's first
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon import demo  # noqa: E402
from detectors.registry import make, threshold_for  # noqa: E402

DAY = demo.DAY
THINNED = 17  # the thinned day: the Thursday of the third week (the streams start on a Monday)


@dataclass(slots=True)
class Tally:
    """What the detector alerted, over every series."""

    series_days: int = 0
    false_rises: int = 0
    false_falls: int = 0
    found: list[float] = field(default_factory=list)  # minutes from midnight to the fall
    missed: int = 0
    rises_then: int = 0  # rises on the thinned day and the day after


def run_one(seed: int, days: int, factor: float, wander: float, bucket: float,
            tally: Tally, utc_offset: float = 0.0, clock_change: float | None = None,
            holiday: bool = False, thinned_day: int = THINNED) -> None:
    """One series: generate, score and learn bucket by bucket, and count its alerts.

    The brand's day and week are local at ``utc_offset`` hours, an hour
    more from 07:00 UTC on day ``clock_change`` (summer time); the thinned
    day is a UTC day either way, and with ``holiday`` a date of the
    detector's holiday calendar.
    """
    traffic = demo.Traffic(peak=(1.0, 10.0, 40.0)[seed % 3],
                           night=(0.15, 0.05, 0.3)[(seed // 3) % 3],
                           weekend=(0.7, 1.0, 0.5)[seed % 3],
                           shape=(8.0, 3.0, 15.0)[(seed // 3) % 3], utc_offset=utc_offset)
    summer = dataclasses.replace(traffic, utc_offset=utc_offset + 1.0)
    change = math.inf if clock_change is None else demo.START + clock_change * DAY + 7 * 3600.0
    rng = np.random.default_rng(seed)
    thinned = dt.datetime.fromtimestamp(demo.START + thinned_day * DAY, dt.UTC).date()
    det = make("volume", bucket=bucket, warmup=DAY, min_volume=20,
               holidays=[thinned] if holiday else [])
    threshold = threshold_for("balanced")
    keep = math.exp(-bucket / (traffic.wander_hours * 3600.0))
    drift, first = 0.0, None
    for k in range(int(days * DAY / bucket)):
        t = demo.START + k * bucket
        day = int((t - demo.START) // DAY)
        drift = keep * drift + math.sqrt(1.0 - keep * keep) * rng.normal(0.0, wander)
        local = traffic if t < change else summer
        lam = local.rate(t + bucket / 2, demo.START) * bucket / 60.0 * math.exp(
            drift - wander * wander / 2.0)
        if day == thinned_day:
            lam *= factor
        x = float(rng.poisson(rng.gamma(traffic.shape, lam / traffic.shape)))
        end = t + bucket
        expected = det.expected(end)
        score = det.score_one(end, x)
        det.learn_one(end, x)
        if score < threshold or day < 2:
            continue
        if factor != 1.0 and day in (thinned_day, thinned_day + 1):
            if x < expected and day == thinned_day and first is None:
                first = (t - demo.START - thinned_day * DAY) / 60.0
            elif x >= expected:
                tally.rises_then += 1
        elif x < expected:
            tally.false_falls += 1
        else:
            tally.false_rises += 1
    other = days - 2 - (2 if factor != 1.0 else 0)
    tally.series_days += other
    if factor != 1.0:
        if first is None:
            tally.missed += 1
        else:
            tally.found.append(first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--series", type=int, default=18)
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--factor", type=float, default=0.1,
                    help="the thinned day's share of its mentions (1: no thinned day)")
    ap.add_argument("--wander", type=float, default=0.3,
                    help="standard deviation of the log rate's drift (0: the smooth stream)")
    ap.add_argument("--bucket", type=float, default=60.0, help="seconds")
    ap.add_argument("--utc-offset", type=float, default=0.0, metavar="HOURS",
                    help="the brands' time zone: their nights and weekends are local there, "
                         "while the detector's weekly factors are kept per UTC day")
    ap.add_argument("--clock-change", type=float, default=None, metavar="DAY",
                    help="the brands' clocks go an hour forward at 07:00 UTC on this day")
    ap.add_argument("--day", type=int, default=THINNED,
                    help="the thinned day, from 0 (a Monday); 9 is the first Wednesday the "
                         "detector has weekly factors for")
    ap.add_argument("--holiday", action="store_true",
                    help="the thinned day is a public holiday in the detector's calendar")
    args = ap.parse_args()
    tally = Tally()
    for seed in range(args.series):
        run_one(seed, args.days, args.factor, args.wander, args.bucket, tally, args.utc_offset,
                args.clock_change, args.holiday, args.day)
    change = "" if args.clock_change is None else f", an hour on from day {args.clock_change:g}"
    thinned = "no thinned day" if args.factor == 1.0 else (
        f"day {args.day} thinned to {args.factor:g}"
        f"{' (a holiday in the calendar)' if args.holiday else ''}")
    print(f"{args.series} series, {args.days} days of {args.bucket:g} s buckets, "
          f"drift {args.wander:g}, {thinned}, brands at UTC{args.utc_offset:+g}{change}")
    if args.factor != 1.0:
        found = tally.found
        when = (f", {min(found):.0f}–{max(found):.0f} min after midnight "
                f"(median {statistics.median(found):.0f})" if found else "")
        print(f"  thinned day reported as a fall: {len(found)}/{args.series}{when}")
        print(f"  rises on the thinned day and the day after: {tally.rises_then}")
    print(f"  on the other {tally.series_days} series-days after the warm-up: "
          f"false rises {tally.false_rises}, false falls {tally.false_falls}")


if __name__ == "__main__":
    main()
