"""Detection quality and cost: NAB realTweets scores at the default threshold, and timings.

Feeds each NAB CSV through ``registry.make("volume", bucket=300, warmup=86400,
min_volume=20)`` exactly as the pipeline will (``score_one`` then
``learn_one`` per row, alert = score ≥ ``threshold_for("balanced")``), writes
the NAB layout (``OUT/volume/<file>.csv``) and scores it with
``../shared/tools/nabscore.py`` at that threshold. Then measures µs per update
and pickled bytes per series for every detector, ``extract_terms`` per
mention, and one bucket tick of 10,000 series with every signal on.

Usage::

    .venv/bin/python bench/bench_detection.py [--data DIR] [--out DIR] [--series 10000]
"""

from __future__ import annotations

import argparse
import csv
import pickle
import random
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detectors import registry  # noqa: E402
from detectors.terms import TermDetector, extract_terms  # noqa: E402

SHARED = ROOT.parent / "shared"
NAB = SHARED / "data" / "nab"
NABSCORE = SHARED / "tools" / "nabscore.py"
T0 = 1_700_000_000.0


def read_csv(path: Path) -> tuple[list[str], list[float], list[float]]:
    stamps, times, values = [], [], []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            stamps.append(row[0])
            times.append(datetime.fromisoformat(row[0]).replace(tzinfo=UTC).timestamp())
            values.append(float(row[1]))
    return stamps, times, values


def replay_nab(data: Path, out: Path, threshold: float) -> tuple[float, int]:
    """Score every CSV as the pipeline will; returns (detector seconds, rows)."""
    (out / "volume").mkdir(parents=True, exist_ok=True)
    elapsed, rows = 0.0, 0
    for path in sorted(data.glob("*.csv")):
        stamps, times, values = read_csv(path)
        det = registry.make("volume", bucket=300, warmup=86400, min_volume=20)
        scores = []
        start = time.perf_counter()
        for t, x in zip(times, values, strict=True):
            scores.append(det.score_one(t, x))
            det.learn_one(t, x)
        elapsed += time.perf_counter() - start
        rows += len(values)
        with open(out / "volume" / path.name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["timestamp", "value", "anomaly_score", "alert"])
            for s, x, sc in zip(stamps, values, scores, strict=True):
                w.writerow([s, x, repr(sc), int(sc >= threshold)])
    return elapsed, rows


def nab_table(out: Path, threshold: float | None) -> str:
    cmd = [sys.executable, str(NABSCORE), "--windows", str(NAB / "combined_windows.json"),
           "--results", *map(str, sorted((out / "volume").glob("*.csv")))]
    if threshold is not None:
        cmd += ["--threshold", repr(threshold), "--per-file"]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


# -- per-detector cost ----------------------------------------------------------

def _traffic(rng: random.Random, i: int, bucket: float) -> tuple[float, float, float, float]:
    """A day-seasonal mention stream: (volume, negatives, mean sentiment, max neg. followers)."""
    t = T0 + bucket * i
    import math
    lam = 30.0 * (1.0 + 0.6 * math.sin(2 * math.pi * (t % 86400) / 86400))
    vol = float(sum(rng.random() < lam / 200 for _ in range(200)))
    neg = float(sum(rng.random() < 0.15 for _ in range(int(vol))))
    sent = rng.gauss(0.1, 0.4 / max(vol, 1.0) ** 0.5)
    reach = float(int(100 / rng.random() ** 0.9)) if neg else 0.0
    return vol, neg, sent, reach


def _xn(signal: str, vol: float, neg: float, sent: float, reach: float) -> tuple[float, float]:
    return {"volume": (vol, 1.0), "negative_volume": (neg, 1.0),
            "negative_share": (neg, vol), "sentiment": (sent, vol),
            "reach": (reach, max(neg, 1.0))}[signal]


def warm_set(bucket: float = 60.0, days: float = 1.5, seed: int = 7) -> tuple[dict, list]:
    """One series' detectors for every signal, warmed on simulated traffic."""
    rng = random.Random(seed)
    dets = {s: registry.make(s, bucket=bucket, warmup=86400, min_volume=20)
            for s in registry.SIGNALS}
    terms = TermDetector(bucket=bucket, warmup=86400)
    n = int(days * 86400 / bucket)
    stream = [_traffic(rng, i, bucket) for i in range(n + 3500)]
    vocab = [f"w{k}" for k in range(300)] + ["outage", "recall", "breach"]
    for i in range(n):
        vol, neg, sent, reach = stream[i]
        t = T0 + bucket * i
        for s, d in dets.items():
            x, m = _xn(s, vol, neg, sent, reach)
            d.score_one(t, x, m)
            d.learn_one(t, x, m)
        if i % 10 == 0 or i > n - 50:  # terms: cheaper warm-up, same state shape
            bag = _bag(rng, vocab, int(vol))
            terms.score_terms(t, bag, int(vol))
            terms.learn_terms(t, bag, int(vol))
    return {"dets": dets, "terms": terms, "n": n, "vocab": vocab}, stream


def _bag(rng: random.Random, vocab: list[str], vol: int) -> dict[str, int]:
    bag: dict[str, int] = {}
    for _ in range(vol * 8):  # ~8 kept terms per mention, Zipf-ish vocabulary
        w = vocab[min(int(rng.paretovariate(1.1)) - 1, len(vocab) - 1)]
        bag[w] = bag.get(w, 0) + 1
    return bag


def cost_table(bucket: float = 60.0, updates: int = 3000) -> list[tuple[str, float, int]]:
    state, stream = warm_set(bucket)
    rng = random.Random(11)
    rows = []
    n0 = state["n"]
    for s, det in state["dets"].items():
        d = pickle.loads(pickle.dumps(det))
        start = time.perf_counter()
        for i in range(updates):
            vol, neg, sent, reach = stream[n0 + i]
            x, m = _xn(s, vol, neg, sent, reach)
            t = T0 + bucket * (n0 + i)
            d.score_one(t, x, m)
            d.learn_one(t, x, m)
        us = (time.perf_counter() - start) / updates * 1e6
        rows.append((s, us, len(pickle.dumps(d))))
    td = pickle.loads(pickle.dumps(state["terms"]))
    bags = [_bag(rng, state["vocab"], int(stream[n0 + i][0])) for i in range(300)]
    start = time.perf_counter()
    for i, bag in enumerate(bags):
        t = T0 + bucket * (n0 + i)
        vol = sum(bag.values()) // 8
        td.score_terms(t, bag, vol)
        td.learn_terms(t, bag, vol)
    us = (time.perf_counter() - start) / len(bags) * 1e6
    rows.append((f"terms ({sum(len(b) for b in bags) // len(bags)} distinct terms/bucket)", us,
                 len(pickle.dumps(td))))
    return rows


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


def tick_10k(series: int, bucket: float = 60.0) -> tuple[float, float, int, float]:
    """One bucket tick of ``series`` series, every signal on (terms on a 5-term bucket)."""
    state, _stream = warm_set(bucket)
    blob = pickle.dumps(state["dets"])
    tblob = pickle.dumps(state["terms"])
    tracemalloc.start()
    fleet = [(pickle.loads(blob), pickle.loads(tblob)) for _ in range(series)]
    resident = tracemalloc.get_traced_memory()[0] / series
    tracemalloc.stop()
    n0 = state["n"]
    t = T0 + bucket * n0
    rng = random.Random(5)
    # most series are quiet: a handful of mentions a minute
    inputs = []
    for _ in range(series):
        vol = float(rng.randint(0, 6))
        neg = float(sum(rng.random() < 0.15 for _ in range(int(vol))))
        inputs.append((vol, neg, rng.gauss(0.1, 0.2), 500.0 if neg else 0.0,
                       {f"w{rng.randint(0, 40)}": 1 for _ in range(int(vol) * 3)}))
    start = time.perf_counter()
    for (dets, terms), (vol, neg, sent, reach, bag) in zip(fleet, inputs, strict=True):
        for s, d in dets.items():
            x, m = _xn(s, vol, neg, sent, reach)
            d.score_one(t, x, m)
            d.learn_one(t, x, m)
        terms.score_terms(t, bag, int(vol))
        terms.learn_terms(t, bag, int(vol))
    ms = (time.perf_counter() - start) * 1e3
    return ms, len(blob) + len(tblob), series, resident


def run_nab(data: Path, out: Path, thr: float) -> None:
    secs, rows = replay_nab(data, out, thr)
    print(f"NAB realTweets, volume detector, balanced threshold {thr!r} (p = {1 - thr:.0e})")
    print(f"  replay: {rows} rows in {secs:.2f} s of detector time "
          f"({secs / rows * 1e6:.1f} µs per row, score_one + learn_one)")
    print(nab_table(out, thr))
    best = nab_table(out, None)
    print("for reference only, thresholds optimised on this data (an upper bound):")
    print("\n".join(line for line in best.splitlines()
                    if re.match(r"\s+(standard|reward)", line)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=NAB / "realTweets")
    ap.add_argument("--out", type=Path, default=None, help="keep the NAB layout here")
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--skip-costs", action="store_true")
    ap.add_argument("--skip-nab", action="store_true")
    args = ap.parse_args()
    thr = registry.threshold_for("balanced")
    if not args.skip_nab:
        with tempfile.TemporaryDirectory() as tmp:
            run_nab(args.data, args.out or Path(tmp), thr)
    if args.skip_costs:
        return
    print("\nper-detector cost (60 s buckets, warmed on 1.5 days of simulated traffic)")
    print(f"  {'detector':44} {'µs/update':>10} {'bytes/series':>13}")
    total = 0
    for name, us, size in cost_table():
        total += size
        print(f"  {name:44} {us:10.1f} {size:13d}")
    print(f"  {'all signals':44} {'':>10} {total:13d}")
    print(f"  extract_terms: {extract_cost():.1f} µs per mention (best of 5)")
    ms, size, n, resident = tick_10k(args.series)
    print(f"\none bucket tick, {n} series, every signal on: {ms:.0f} ms "
          f"({ms / n * 1e3:.0f} µs per series); state per series: {size} bytes pickled, "
          f"{resident / 1024:.0f} KiB in memory ({resident * n / 2**20:.0f} MiB in all)")


if __name__ == "__main__":
    main()
