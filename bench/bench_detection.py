"""Detection quality and cost: NAB realTweets scores at the default threshold, and timings.

Replays the NAB CSVs through the real pipeline exactly as ``crisisd replay
FILES --scores OUT`` does (the ten series tick together through one bank per
signal), then scores ``OUT/volume/*.csv`` with ``../shared/tools/nabscore.py``
at the default (``balanced``) threshold; then the same counts summed to hours
(another cadence of the same real series). Then measures every detector bank:
µs per tick for one series, ms per tick for 10,000 series, pickled bytes per
series, ``extract_terms`` per mention, one bucket tick of 10,000 series
with every signal on (terms included), and what ``GET /series`` costs the
daemon's loop at that many series.

Usage::

    .venv/bin/python bench/bench_detection.py [--data DIR] [--out DIR] [--series 10000]
        [--other NAB/data --other-windows NAB/labels/combined_windows.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import pickle
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from daemon import backtest, logs  # noqa: E402
from daemon.api import Reply  # noqa: E402
from daemon.config import Config, DetectionConfig  # noqa: E402
from daemon.detect import DetectStage  # noqa: E402
from daemon.domain import Bucket, SeriesKey  # noqa: E402
from detectors import registry  # noqa: E402
from detectors.terms import TermDetector, extract_terms  # noqa: E402

SHARED = ROOT.parent / "shared"
NAB = SHARED / "data" / "nab"
NABSCORE = SHARED / "tools" / "nabscore.py"
T0 = 1_700_000_000.0
SIGNALS = registry.SIGNALS


def replay_nab(data: Path, out: Path) -> tuple[float, float, int]:
    """``crisisd replay --scores`` in-process: (wall seconds, detect seconds, buckets)."""
    cfg = Config(state_dir=out / "state")  # the incidents' reports, not in the working directory
    start = time.perf_counter()
    result = asyncio.run(backtest.replay(sorted(data.glob("*.csv")), cfg, scores=out))
    return time.perf_counter() - start, result.stats.detect_seconds, result.stats.buckets


def nab_table(out: Path, threshold: float | None, windows: Path = NAB / "combined_windows.json",
              per_file: bool = True) -> str:
    cmd = [sys.executable, str(NABSCORE), "--windows", str(windows),
           "--results", *map(str, sorted((out / "volume").glob("*.csv")))]
    if threshold is not None:
        cmd += ["--threshold", repr(threshold), *(["--per-file"] if per_file else [])]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def to_hours(data: Path, work: Path) -> tuple[Path, Path]:
    """The NAB files summed to hourly counts, and the windows' ends rounded down to the hour.

    Another cadence of the same real series: what a feed of hourly counts
    gives the volume detector. (The data directory, the windows file.)
    """
    folder = work / "realTweets"
    folder.mkdir(parents=True)
    for path in sorted(data.glob("*.csv")):
        sums: dict[float, int] = {}
        with path.open() as fh:
            for row in csv.DictReader(fh):
                moment = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC)
                hour = moment.timestamp() // 3600 * 3600
                sums[hour] = sums.get(hour, 0) + round(float(row["value"]))
        hours = np.arange(min(sums), max(sums) + 1, 3600.0)
        with (folder / path.name).open("w") as fh:
            fh.write("timestamp,value\n")
            for h in hours:
                when = datetime.fromtimestamp(h, UTC).strftime("%Y-%m-%d %H:%M:%S")
                fh.write(f"{when},{sums.get(h, 0)}\n")
    windows = json.loads((NAB / "combined_windows.json").read_text())
    hourly = {key: [[a[:13] + ":00:00.000000", b[:13] + ":00:00.000000"] for a, b in spans]
              for key, spans in windows.items()}
    (work / "windows.json").write_text(json.dumps(hourly))
    return folder, work / "windows.json"


# -- per-detector cost ----------------------------------------------------------

def traffic(rng: np.random.Generator, n_series: int, ticks: int, bucket: float,
            rate: float) -> dict[str, np.ndarray]:
    """Day-seasonal mention streams, (ticks, series) per field, ``rate`` mentions a bucket
    on average (series' own rates spread evenly from nearly 0 to twice that)."""
    t = T0 + bucket * np.arange(ticks)
    base = rng.uniform(0.05 * rate, 1.95 * rate, n_series)
    lam = base[None, :] * (1.0 + 0.6 * np.sin(2 * np.pi * (t % 86400) / 86400))[:, None]
    vol = rng.poisson(lam).astype(float)
    neg = rng.binomial(vol.astype(int), 0.15).astype(float)
    sent = rng.normal(0.1, 0.4 / np.sqrt(np.maximum(vol, 1.0)))
    reach = np.where(neg > 0, np.floor(100 / rng.random(vol.shape) ** 0.9), 0.0)
    return {"t": t, "vol": vol, "neg": neg, "sent": sent, "reach": reach}


def feed(signal: str, s: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    vol, neg = s["vol"][k], s["neg"][k]
    ones = np.ones_like(vol)
    return {"volume": (vol, ones), "negative_volume": (neg, vol), "negative_share": (neg, vol),
            "sentiment": (s["sent"][k], vol), "reach": (s["reach"][k], ones)}[signal]


def bags(rng: np.random.Generator, vol: np.ndarray, vocab: int = 300) -> list[dict[str, int]]:
    """Term counts per series: ~8 kept terms per mention from a Zipf-ish vocabulary."""
    out = []
    for v in vol.astype(int):
        words = np.minimum(rng.zipf(1.3, v * 8), vocab) if v else []
        bag: dict[str, int] = {}
        for w in words:
            key = f"w{w}"
            bag[key] = bag.get(key, 0) + 1
        out.append(bag)
    return out


def warm_banks(n_series: int, rate: float, bucket: float = 60.0, days: float = 1.2,
               seed: int = 7) -> tuple[dict, TermDetector, dict[str, np.ndarray], int, float]:
    """A bank per signal (and terms) of ``n_series`` slots, warmed on simulated traffic;
    also the bytes the banks hold in memory (traced allocations, the stream excluded)."""
    rng = np.random.default_rng(seed)
    warm = int(days * 86400 / bucket)
    stream = traffic(rng, n_series, warm + 200, bucket, rate)
    tracemalloc.start()
    banks = {s: registry.make(s, bucket=bucket, warmup=86400, min_volume=20) for s in SIGNALS}
    terms = TermDetector(bucket=bucket, warmup=86400)
    slots = np.arange(n_series, dtype=np.intp)
    for bank in [*banks.values(), terms]:
        for _ in range(n_series):
            bank.add()
    for k in range(warm):
        t = float(stream["t"][k])
        for s, bank in banks.items():
            x, n = feed(s, stream, k)
            bank.score(t, slots, x, n)
            bank.learn(t, slots, x, n)
        if k % 30 == 0 or k > warm - 30:  # terms: a cheaper warm-up, the same state shape
            b = bags(rng, stream["vol"][k])
            terms.score(t, slots, b, stream["vol"][k])
            terms.learn(t, slots, b, stream["vol"][k])
    held = float(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    return banks, terms, stream, warm, held


def cost_table(n_series: int, rate: float, bucket: float = 60.0, ticks: int = 100) -> tuple:
    """Rows of (detector, µs per tick of one series, ms per tick of n_series, pickled
    bytes/series); one tick of every bank at once (ms); KiB held in memory per series."""
    rows = []
    one, one_terms, one_stream, w1, _ = warm_banks(1, rate, bucket)
    many, many_terms, stream, w, held = warm_banks(n_series, rate, bucket)
    rng = np.random.default_rng(11)
    s1 = np.zeros(1, np.intp)
    sn = np.arange(n_series, dtype=np.intp)
    for s in SIGNALS:
        b1, bn = one[s], many[s]
        start = time.perf_counter()
        for k in range(w1, w1 + ticks):
            x, n = feed(s, one_stream, k)
            b1.score(float(one_stream["t"][k]), s1, x, n)
            b1.learn(float(one_stream["t"][k]), s1, x, n)
        us = (time.perf_counter() - start) / ticks * 1e6
        best = math.inf
        for k in range(w, w + 20):
            x, n = feed(s, stream, k)
            start = time.perf_counter()
            bn.score(float(stream["t"][k]), sn, x, n)
            bn.learn(float(stream["t"][k]), sn, x, n)
            best = min(best, time.perf_counter() - start)
        rows.append((s, us, best * 1e3, len(pickle.dumps(bn)) / n_series))
    b1 = [bags(rng, one_stream["vol"][k]) for k in range(w1, w1 + ticks)]
    start = time.perf_counter()
    for i, k in enumerate(range(w1, w1 + ticks)):
        one_terms.score(float(one_stream["t"][k]), s1, b1[i], one_stream["vol"][k])
        one_terms.learn(float(one_stream["t"][k]), s1, b1[i], one_stream["vol"][k])
    us = (time.perf_counter() - start) / ticks * 1e6
    best = math.inf
    for k in range(w, w + 5):
        bn = bags(rng, stream["vol"][k])
        start = time.perf_counter()
        many_terms.score(float(stream["t"][k]), sn, bn, stream["vol"][k])
        many_terms.learn(float(stream["t"][k]), sn, bn, stream["vol"][k])
        best = min(best, time.perf_counter() - start)
    distinct = sum(len(b) for b in bn) / n_series
    rows.append((f"terms ({distinct:.0f} distinct terms/series)", us, best * 1e3,
                 len(pickle.dumps(many_terms)) / n_series))
    return rows, tick_all(many, many_terms, stream, w, rng), held / n_series / 1024


def extract_cost() -> float:
    texts = [
        "Just tried to order from the new store and the app is not working again, so annoying "
        "#fail can't believe this happens every week",
        "@brand my package arrived damaged and customer service hung up on me twice. data "
        "breach too? unreal",
        "Loving the new flavour!!! best thing you've made in years, thank you so much #yum",
    ]
    n = 20000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for i in range(n):
            extract_terms(texts[i % 3])
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def tick_all(banks: dict, terms: TermDetector, stream: dict[str, np.ndarray], w: int,
             rng: np.random.Generator) -> float:
    """One bucket tick of every bank (all signals and terms), best of five, in ms."""
    slots = np.arange(len(stream["vol"][0]), dtype=np.intp)
    best = math.inf
    for k in range(w + 20, w + 25):
        t = float(stream["t"][k])
        b = bags(rng, stream["vol"][k])
        start = time.perf_counter()
        for s, bank in banks.items():
            x, n = feed(s, stream, k)
            bank.score(t, slots, x, n)
            bank.learn(t, slots, x, n)
        terms.score(t, slots, b, stream["vol"][k])
        terms.learn(t, slots, b, stream["vol"][k])
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def listing_cost(n_series: int, bucket: float = 60.0, ticks: int = 30) -> tuple[float, float, int]:
    """``GET /series`` at ``n_series`` series: (ms listing them, ms encoding the reply, bytes).

    The detect stage is driven as the pipeline drives it, every signal on, for
    ``ticks`` buckets (the bands of a few ticks' learning cost what a warm
    bank's do); both steps run on the daemon's loop. Best of three.
    """
    rng = np.random.default_rng(3)
    stage = DetectStage(DetectionConfig())
    keys = [SeriesKey(f"brand{i}", "twitter") for i in range(n_series)]
    for k in range(ticks):
        start = T0 + bucket * k
        vol = rng.poisson(3.0, n_series).tolist()
        buckets = []
        for key, v in zip(keys, vol, strict=True):
            b = Bucket(key, start, start + bucket, volume=v, negative=v // 4, sentiment_n=v,
                       sentiment_sum=0.1 * v, max_negative_followers=100 * v)
            b.terms.update({"order": v, "coffee": v // 2})
            buckets.append(b)
        stage.process(buckets)
    t = T0 + bucket * ticks
    listed = encoded = math.inf
    for _ in range(3):
        start = time.perf_counter()
        rows = stage.watched(t)
        mid = time.perf_counter()
        reply = Reply.json(rows)
        listed = min(listed, mid - start)
        encoded = min(encoded, time.perf_counter() - mid)
    return listed * 1e3, encoded * 1e3, len(reply.body)


def run_nab(data: Path, out: Path, thr: float) -> None:
    wall, detect, buckets = replay_nab(data, out)
    print(f"NAB realTweets through the pipeline, balanced threshold {thr!r} (p = {1 - thr:.0e})")
    print(f"  replay: {buckets} buckets in {wall:.2f} s ({detect:.2f} s in the detect stage)")
    print(nab_table(out, thr))
    best = nab_table(out, None)
    print("for reference only, thresholds optimised on this data (an upper bound):")
    print("\n".join(line for line in best.splitlines()
                    if re.match(r"\s+(standard|reward)", line)))
    hourly, windows = to_hours(data, out / "hourly-data")
    replay_nab(hourly, out / "hourly")
    at = registry.threshold_at("volume", thr, 3600.0)
    print(f"\nthe same counts summed to hours (window ends rounded down to the hour), at "
          f"the preset's threshold for hourly counts {at:.6f}:")
    print(nab_table(out / "hourly", at, windows, per_file=False))


def run_other(data: Path, windows: Path, out: Path, thr: float) -> None:
    """NAB files of other kinds (``data/<category>/*.csv``, e.g. a checkout of NAB's data)
    replayed together, as ``crisisd replay`` would, and scored per file at the preset.

    Not shipped here, and not tuned on: a check that series unlike mention counts
    (costs per click, CPU loads, travel times; gaps, jitter, years apart) replay
    into score files that line up with their rows, and what the count detector
    makes of them.
    """
    paths = sorted(data.glob("*/*.csv"))
    cfg = Config(state_dir=out / "state")
    start = time.perf_counter()
    result = asyncio.run(backtest.replay(paths, cfg, scores=out / "scores"))
    wall = time.perf_counter() - start
    layout = out / "layout"
    for path in paths:  # the scorer reads <category>/<file>.csv
        (layout / path.parent.name).mkdir(parents=True, exist_ok=True)
        (out / "scores" / "volume" / path.name).rename(layout / path.parent.name / path.name)
    cmd = [sys.executable, str(NABSCORE), "--windows", str(windows), "--threshold", repr(thr),
           "--per-file", "--results", *map(str, sorted(layout.glob("*/*.csv")))]
    scored = subprocess.run(cmd, capture_output=True, text=True)
    if scored.returncode:
        sys.exit(f"nabscore refused the score files: {scored.stderr.strip()}")
    table = scored.stdout
    print(f"\nNAB files of other kinds under {data} ({len(paths)} files, "
          f"{result.stats.metrics:,} rows) replayed together in {wall:.2f} s, "
          f"balanced threshold {thr!r}:")
    print(table.split("  per file, reward_low_FP_rate")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=NAB / "realTweets")
    ap.add_argument("--out", type=Path, default=None, help="keep the NAB layout here")
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--rate", type=float, default=3.0,
                    help="mean mentions per series per 1-minute bucket (most series are quiet)")
    ap.add_argument("--skip-costs", action="store_true")
    ap.add_argument("--skip-nab", action="store_true")
    ap.add_argument("--other", type=Path, default=None, metavar="DIR",
                    help="also score NAB files of other kinds, DIR/<category>/*.csv")
    ap.add_argument("--other-windows", type=Path, default=None, metavar="FILE",
                    help="NAB's combined_windows.json covering them")
    args = ap.parse_args()
    thr = registry.threshold_for("balanced")
    if not args.skip_nab:
        with tempfile.TemporaryDirectory() as tmp:
            run_nab(args.data, args.out or Path(tmp), thr)
    if args.other is not None:
        if args.other_windows is None:
            ap.error("--other needs --other-windows (NAB's labels/combined_windows.json)")
        with tempfile.TemporaryDirectory() as tmp:
            run_other(args.other, args.other_windows, Path(tmp), thr)
    if args.skip_costs:
        return
    n = args.series
    print(f"\ndetector banks (60 s buckets, {args.rate:g} mentions a bucket per series on "
          "average, warmed on 1.2 days of simulated traffic)")
    print(f"  {'detector':40} {'µs/tick, 1 series':>18} {f'ms/tick, {n} series':>22} "
          f"{'bytes/series':>13}")
    rows, ms, kib = cost_table(n, args.rate)
    total = 0.0
    for name, us, ms_n, size in rows:
        total += size
        print(f"  {name:40} {us:18.1f} {ms_n:22.2f} {size:13.0f}")
    print(f"  {'all signals':40} {'':>18} {'':>22} {total:13.0f}")
    print(f"  extract_terms: {extract_cost():.1f} µs per mention (best of 5)")
    print(f"\none bucket tick, {n} series, every signal on: {ms:.1f} ms "
          f"({ms / n * 1e3:.1f} µs per series); {kib:.0f} KiB in memory per series "
          f"({kib * n / 1024:.0f} MiB in all)")
    logs.setup("warning")  # (the stage logs its series warming up at info)
    listed, encoded, size = listing_cost(n)
    print(f"GET /series, {n} series: listed in {listed:.0f} ms, encoded in {encoded:.0f} ms "
          f"({size / 1e6:.1f} MB), on the daemon's loop")

if __name__ == "__main__":
    main()
