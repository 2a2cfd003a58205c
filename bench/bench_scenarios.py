"""Detection end to end on generated brands: every crisis kind caught, nothing else paged.

NAB measures one signal (volume) on ten series. This measures what a user
sees: many simulated brands, each with its own traffic (from a mention a
minute to dozens), replayed together through the real pipeline with the
shipped ``config.yaml`` and playbooks, exactly as ``crisisd replay`` runs.
Every brand gets one scenario on the same afternoon of a normal week:

* ``normal`` and ``launch`` (a positive spike eight times the daily peak)
  must open no incident;
* ``complaints``, ``recall``, ``outage``, ``breach``, ``boycott``, ``turn``,
  ``burn`` and ``influencer`` must open one, with the playbook a user would
  expect, soon after the scenario starts.

It prints one row per brand and a summary: crises caught, delay from the
scenario's start to the incident (median and worst), the playbook chosen,
incidents opened on brands where nothing happened, and the anomalies by
signal and severity tier (those that opened no incident included).

Usage::

    .venv/bin/python bench/bench_scenarios.py [--peaks 1,10,40] [--seeds 2] [--days 7]
    .venv/bin/python bench/bench_scenarios.py --scenarios normal --seeds 6 --days 15
    .venv/bin/python bench/bench_scenarios.py --intensity 0.5    # crises half as loud
    .venv/bin/python bench/bench_scenarios.py --scenarios normal --start-day sat   # new brands
    .venv/bin/python bench/bench_scenarios.py --at 03:05    # crises that break in the night
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon import backtest, demo, logs  # noqa: E402
from daemon.config import load as load_config  # noqa: E402
from daemon.domain import IncidentChange  # noqa: E402

DAY = demo.DAY
HOUR = 3600.0
AFTERNOON = 14 * HOUR + 300
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: The slow drift of every brand's rate (see demo.Traffic): the log of NAB's ten
#: Twitter series strays from its hour-of-week median by 0.18 to 0.60 (robust
#: standard deviation), Poisson noise included; the smooth stream without it
#: (0) is far quieter than real traffic at the scale of hours.
WANDER = 0.3


@dataclass(frozen=True, slots=True)
class Scenario:
    """What happens to one brand, and what a user expects the daemon to do about it."""

    name: str
    texts: list[tuple[str, float]]
    peak: float  # extra mentions a minute at the height, as a multiple of the daily peak
    rise: float = 8.0
    decay: float = 90.0
    playbooks: tuple[str, ...] = ()  # acceptable playbooks; empty: no incident at all
    spark_followers: int = 0


COMPLAINTS = [
    ("{b} charged me twice and support hung up on me. Worst service ever", -0.8),
    ("Three weeks and {b} still hasn't refunded me. Never again", -0.7),
    ("Anyone else stuck on hold with {b} for two hours? Ridiculous", -0.6),
    ("{b} cancelled my order without telling me. Furious", -0.8),
]
SCENARIOS = [
    Scenario("normal", [], 0.0),
    Scenario("launch", [("The new {b} {p} is amazing, best launch this year! Love it", 0.9),
                        ("Just preordered the new {b} {p}, so excited", 0.8)], 8.0),
    Scenario("complaints", COMPLAINTS, 4.0,
             playbooks=("viral-complaint", "catch-all")),
    Scenario("recall", [("My {b} {p} caught fire, my son got burned. Recall it now", -0.9),
                        ("Another {b} {p} overheating and burning people #recall", -0.8)],
             3.0, playbooks=("product-recall",)),
    Scenario("outage", [("Is {b} down? The app is not working at all", -0.6),
                        ("{b} outage again, can't log in, nothing works", -0.7)],
             4.0, playbooks=("service-outage",)),
    Scenario("breach", [("Got an email that my {b} account was hacked. Data breach?", -0.7),
                        ("{b} data breach: my card details were leaked", -0.8)],
             0.25, decay=120.0, playbooks=("data-breach",)),
    Scenario("boycott", [("Boycott {b} after what their CEO said. #Boycott{b}", -0.8),
                         ("I'm done with {b}. Join the boycott", -0.7)],
             3.0, playbooks=("brand-scandal",)),
    Scenario("turn", COMPLAINTS, 0.5, rise=30.0, decay=240.0,
             playbooks=("viral-complaint", "catch-all")),
    Scenario("burn", [("Not impressed with {b} lately, quality keeps slipping", -0.4),
                      ("{b} used to be good. Kind of disappointed now", -0.35)],
             0.35, rise=120.0, decay=600.0, playbooks=("viral-complaint", "catch-all")),
    Scenario("influencer", [], 0.0, spark_followers=3_000_000,
             playbooks=("influencer-warning", "viral-complaint")),
]


@dataclass(frozen=True, slots=True)
class Brand:
    """One simulated brand: its traffic and its scenario."""

    name: str
    scenario: Scenario
    traffic: demo.Traffic
    seed: int
    intensity: float = 1.0  # the storm's extra mentions, as a multiple of the scenario's

    def storm(self, at: float) -> demo.Storm | None:
        """The scenario as a storm in the demo generator's terms (None: a normal week)."""
        sc = self.scenario
        if not sc.texts and not sc.spark_followers:
            return None
        spark = None
        if sc.spark_followers:
            spark = {
                "id": f"{self.name}-spark", "ts": at, "channel": "twitter",
                "text": f"Avoid {self.name.title()}. Their product broke and they ignored me "
                        "for a month. Terrible.",
                "author": "bigaccount", "followers": sc.spark_followers, "sentiment": -0.8,
                "url": "https://example.invalid/spark",
            }
        return demo.Storm(at=at, channel="twitter", texts=sc.texts or COMPLAINTS,
                          peak=sc.peak * self.intensity * self.traffic.peak, rise=sc.rise,
                          decay=sc.decay, spark=spark)


def brands(peaks: Iterable[float], seeds: int, only: Iterable[str] = (),
           wander: float = WANDER, intensity: float = 1.0) -> list[Brand]:
    """Every scenario (or those named in ``only``) at every traffic size; seeds vary
    the night, weekend and burstiness (three shapes, in turn) and the random draws."""
    out = []
    wanted = set(only)
    for peak in peaks:
        for seed in range(seeds):
            traffic = demo.Traffic(peak=peak, night=(0.15, 0.05, 0.3)[seed % 3],
                                   weekend=(0.7, 1.0, 0.5)[seed % 3],
                                   utc_offset=(0.0, -5.0, 8.0)[seed % 3],
                                   shape=(8.0, 3.0, 15.0)[seed % 3], wander=wander,
                                   unscored=0.0)
            for i, sc in enumerate(SCENARIOS):
                if wanted and sc.name not in wanted:
                    continue
                name = f"{sc.name}{peak:g}s{seed}".replace(".", "p")
                out.append(Brand(name, sc, traffic, seed=1000 * seed + 31 * i + int(peak),
                                 intensity=intensity))
    return out


def crisis_time(start: float, days: float, brand: Brand, local: float = AFTERNOON) -> float:
    """``local`` seconds after midnight, brand time (14:05 by default), on the last
    full weekday but one."""
    at = start + (days - 2) * DAY + local - brand.traffic.utc_offset * HOUR
    while brand.traffic.is_weekend(at):
        at -= DAY
    return at


def stream(bs: list[Brand], start: float, days: float, local: float = AFTERNOON
           ) -> Iterator[dict[str, Any]]:
    """All brands' mentions merged in time order."""
    def one(b: Brand) -> Iterator[dict[str, Any]]:
        for m in demo.mentions(b.seed, days, brand=b.name, start=start,
                               storm=b.storm(crisis_time(start, days, b, local)), traffic=b.traffic,
                               channels=(("twitter", 0.75), ("facebook", 0.25))):
            m["id"] = f"{b.name}-{m['id']}"
            yield m
    return heapq.merge(*(one(b) for b in bs), key=lambda m: m["ts"])


@dataclass(slots=True)
class Outcome:
    """What the daemon did for one brand."""

    brand: Brand
    at: float
    incidents: list[tuple[float, str, str]]  # (opened at, playbook, signals)

    @property
    def ok(self) -> bool:
        sc = self.brand.scenario
        if not sc.playbooks:
            return not self.incidents
        return any(pb in sc.playbooks and t >= self.at - 120 for t, pb, _ in self.incidents)

    @property
    def delay(self) -> float | None:
        """Minutes from the scenario's start to the first incident after it."""
        after = [t for t, _, _ in self.incidents if t >= self.at - 120]
        return (min(after) - self.at) / 60.0 if after else None


def run(peaks: Iterable[float], seeds: int, days: float, start: float = demo.START,
        only: Iterable[str] = (), wander: float = WANDER, intensity: float = 1.0,
        local: float = AFTERNOON) -> tuple[list[Outcome], dict[str, Any]]:
    """Generate, replay with the shipped configuration, and judge every brand."""
    bs = brands(peaks, seeds, only, wander, intensity)
    cfg = load_config(ROOT / "config.yaml")
    cfg = cfg.model_copy(update={"playbooks": cfg.playbooks.model_copy(
        update={"dir": ROOT / "playbooks"})})
    figures: dict[str, Any] = {"days": days}
    with tempfile.TemporaryDirectory(prefix="crisisd-scenarios-") as tmp:
        path = Path(tmp) / "brands.jsonl"
        began = time.perf_counter()
        encode, count = msgspec.json.encode, 0
        with path.open("wb") as fh:
            for m in stream(bs, start, days, local):
                fh.write(encode(m) + b"\n")
                count += 1
        figures["generate_s"] = time.perf_counter() - began
        figures["mentions"] = count
        cfg = cfg.model_copy(update={"state_dir": Path(tmp) / "state"})
        result = asyncio.run(backtest.replay([path], cfg))
        figures["replay_s"] = result.seconds
        figures["anomalies"] = result.stats.anomalies
    by_brand: dict[str, list[tuple[float, str, str]]] = {b.name: [] for b in bs}
    for e in result.events:
        if e.change == IncidentChange.OPENED:
            inc = e.incident
            by_brand[inc.brand].append((inc.opened_at, inc.playbook,
                                        ",".join(sorted(inc.signals))))
    outcomes = [Outcome(b, crisis_time(start, days, b, local), by_brand[b.name]) for b in bs]
    return outcomes, figures


def report(outcomes: list[Outcome], figures: dict[str, Any]) -> str:
    """The per-brand table and the summary."""
    lines = [f"{'brand':<22} {'expect':<28} {'incidents (minutes after start, playbook, signals)'}"]
    for o in outcomes:
        expect = "/".join(o.brand.scenario.playbooks) or "nothing"
        got = "; ".join(f"{(t - o.at) / 60:+.0f} {pb} [{sig}]" for t, pb, sig in o.incidents)
        mark = "" if o.ok else "   <-- WRONG"
        lines.append(f"{o.brand.name:<22} {expect:<28} {got or '-'}{mark}")
    crises = [o for o in outcomes if o.brand.scenario.playbooks]
    quiet = [o for o in outcomes if not o.brand.scenario.playbooks]
    delays = [o.delay for o in crises if o.ok and o.delay is not None]
    lines += [
        "",
        f"mentions {figures['mentions']:,.0f}, generated in {figures['generate_s']:.1f} s, "
        f"replayed in {figures['replay_s']:.1f} s "
        f"({figures['mentions'] / figures['replay_s']:,.0f} mentions/s)",
    ]
    if crises:
        lines.append(
            f"crises caught with an expected playbook: {sum(o.ok for o in crises)}/{len(crises)}")
    if quiet:
        lines.append(
            f"brands with nothing to report that were paged: "
            f"{sum(not o.ok for o in quiet)}/{len(quiet)} "
            f"({sum(len(o.incidents) for o in quiet)} incidents in "
            f"{len(quiet) * (figures['days'] - 1):.0f} brand-days after the warm-up)")
    tiers = figures["anomalies"]
    lines.append("anomalies (signal, tier, direction): " + (", ".join(
        f"{sig} {tier} {way} {n}" for (sig, tier, way), n in sorted(tiers.items())) or "none"))
    if delays:
        lines.append(f"delay to the incident: median {statistics.median(delays):.0f} min, "
                     f"worst {max(delays):.0f} min")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peaks", default="1,10,40",
                    help="daily-peak mentions a minute of the brand sizes (comma-separated)")
    ap.add_argument("--seeds", type=int, default=2,
                    help="brands per size and scenario (three traffic shapes, in turn)")
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--start-day", choices=WEEKDAYS, default="mon",
                    help="the weekday the brands' streams (and the detectors) start on: "
                         "a brand that starts on a weekend meets its first weekday "
                         "before the detectors know the week")
    ap.add_argument("--scenarios", default="",
                    help="only these scenarios (comma-separated), e.g. normal for false pages")
    ap.add_argument("--wander", type=float, default=WANDER,
                    help="standard deviation of the slow drift of the log rate (see "
                         "demo.Traffic; 0 for the smooth stream)")
    ap.add_argument("--intensity", type=float, default=1.0,
                    help="every storm's extra mentions as a multiple of its scenario's "
                         "(the influencer's one post is the same), e.g. 0.5 for smaller crises")
    ap.add_argument("--at", default="14:05", metavar="HH:MM",
                    help="the brands' local time the scenarios start at, e.g. 03:05 for a "
                         "crisis that breaks in the night")
    args = ap.parse_args()
    logs.setup("warning")  # the report, not every anomaly's log line
    hh, mm = (int(x) for x in args.at.split(":"))
    only = [s for s in args.scenarios.split(",") if s]
    start = demo.START + WEEKDAYS.index(args.start_day) * DAY  # demo.START is a Monday
    outcomes, figures = run([float(p) for p in args.peaks.split(",")], args.seeds, args.days,
                            start=start, only=only, wander=args.wander, intensity=args.intensity,
                            local=hh * HOUR + mm * 60.0)
    print(report(outcomes, figures))


if __name__ == "__main__":
    main()
