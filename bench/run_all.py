"""Every benchmark in one command, one table at the end.

    .venv/bin/python bench/run_all.py [--quick] [--soak 1000000] [--markdown]

Runs ``bench_pipeline.py`` (replay and MQTT throughput, the bare aiomqtt
ceiling), ``bench_detection.py --skip-nab`` (µs per detector update, one
tick of 10,000 series through the detectors) and ``bench_delivery.py`` when
present, each in its own process (their output goes to stderr as progress),
then measures what they do not:

* **pipeline tick, 10,000 series**: one watermark advance closing a bucket of
  each of 10,000 series through windows, every detector and the incident
  stage (detectors warmed on 20 buckets first); then the detector snapshot
  of them: its size; the time a forked child takes to write it, the event
  loop's longest stall meanwhile, and a tick run beside it (its time, and the
  memory copy-on-write copies for it); the time to save it in place, as at
  shutdown; and to load it into a new pipeline as a restart does;
* **soak**: a 1,000,000-mention replay (20 series, a simulated week) in a
  child process: peak RSS and RSS growth from 20% to 100% of the stream (a
  leak shows as growth; a bounded design stays flat once every ring is full);
* **spike → pager request**: the demo crisis through the real pipeline and
  playbooks with a PagerDuty target pointed at a loopback HTTP server. On
  event time the bucket holding the first spike mention closes only when a
  mention ``lateness`` past its end arrives; live, event time is wall time, so
  the delay is that event-time wait plus the measured processing and delivery
  time of the mention that closed the bucket.

Figures are printed, never asserted. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

Row = tuple[str, str, str]


def _child(args: list[str], timeout: float = 900) -> str:
    """Run a benchmark script; its output (echoed to stderr) for parsing."""
    print(f"\n$ {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    sys.stderr.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise RuntimeError(f"{args[0]} exited with {proc.returncode}")
    return proc.stdout


def pipeline_rows(quick: bool) -> list[Row]:
    """bench_pipeline.py's table: mentions/s (and peak RSS) per measurement."""
    out = _child(["bench/bench_pipeline.py", *(["--quick"] if quick else [])])
    rows: list[Row] = []
    for line in out.splitlines():
        m = re.match(r"(.+?)\s{2,}([\d,]+)(?:\s+(\d+)MiB)?\s*$", line)
        if m and not line.startswith("measurement"):
            rss = f", peak RSS {m.group(3)} MiB" if m.group(3) else ""
            rows.append((m.group(1).strip(), f"{m.group(2)} mentions/s", f"bench_pipeline{rss}"))
        elif "peak RSS of the live runs" in line:
            rows.append(("peak RSS of the live MQTT runs", line.split()[-1], "bench_pipeline"))
    return rows


def detection_rows() -> list[Row]:
    """bench_detection.py's per-bank tick cost and its 10,000-series tick of every bank."""
    out = _child(["bench/bench_detection.py", "--skip-nab"])
    rows: list[Row] = []
    for line in out.splitlines():
        m = re.match(r"\s+(\S.*?)\s{2,}([\d.]+)\s+([\d.]+)\s+(\d+)\s*$", line)
        if m:
            rows.append((f"detector bank: {m.group(1)}", f"{m.group(3)} ms",
                         f"10,000 series a tick; {m.group(2)} µs for one; "
                         f"{m.group(4)} bytes/series pickled"))
        m = re.match(r"\s+extract_terms: ([\d.]+) µs", line)
        if m:
            rows.append(("term extraction per mention", f"{m.group(1)} µs", "bench_detection"))
        m = re.match(r"one bucket tick, (\d+) series, every signal on: ([\d.]+) ms \(([\d.]+) µs",
                     line)
        if m:
            rows.append((f"detector tick, {int(m.group(1)):,} series (detectors only)",
                         f"{m.group(2)} ms", f"{m.group(3)} µs per series; bench_detection"))
    return rows


def delivery_rows() -> list[Row]:
    """bench_delivery.py's lines, verbatim, when that benchmark exists."""
    script = ROOT / "bench" / "bench_delivery.py"
    if not script.exists():
        return []
    out = _child([str(script.relative_to(ROOT))])
    rows: list[Row] = []
    header = "delivery"
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            header = line.strip()
            continue
        text = " ".join(line.split())
        name, sep, value = text.partition(":")
        if not sep or not any(ch.isdigit() for ch in value):
            name, value = "", text
        label = f"{header}, {name}" if name else header
        rows.append((label, value.strip(), "bench_delivery"))
    return rows


# ------------------------------------------------------------- pipeline tick


def pipeline_tick(series: int = 10_000, warm: int = 20) -> list[Row]:
    """One bucket closing for ``series`` series through the real pipeline stages; then
    the detector snapshot of them saved, and loaded into a new pipeline as a restart does."""
    from daemon import config, logs, snapshots
    from daemon.clock import SimClock
    from daemon.domain import Mention
    from daemon.pipeline import Pipeline

    logs.setup("error")
    cfg = config.Config.model_validate({"detection": {"warmup": "0s"},
                                        "windows": {"max_series": series}})
    pipeline = Pipeline(cfg, SimClock())
    rng = random.Random(11)
    t0 = 1_767_225_600.0
    brands = [f"brand{i:05d}" for i in range(series // 2)]
    lateness = cfg.windows.lateness

    def bucket(k: int) -> list[Any]:
        ts = t0 + 60 * k + 30
        return [Mention(f"{b}-{c}-{k}", ts, b, c, "order late again support", followers=10,
                        sentiment=rng.uniform(-0.2, 0.6))
                for b in brands for c in ("twitter", "facebook")
                for _ in range(1 + (rng.random() < 0.3))]

    async def run() -> float:
        for k in range(warm):
            await pipeline.feed(bucket(k))
        await pipeline.feed(bucket(warm))
        # Everything of bucket `warm` is in; the next mention moves the watermark past it.
        closing = [Mention("closer", t0 + 60 * (warm + 1) + lateness + 1, brands[0], "twitter",
                           "x", sentiment=0.1)]
        buckets = pipeline.stats.buckets
        anomalies = pipeline.stats.anomalies.total()
        detect = pipeline.stats.detect_seconds
        start = time.perf_counter()
        await pipeline.feed(closing)
        seconds = time.perf_counter() - start
        closed = pipeline.stats.buckets - buckets
        assert closed >= series, f"only {closed} buckets closed"
        found.append(pipeline.stats.anomalies.total() - anomalies)
        found.append(pipeline.stats.detect_seconds - detect)
        await pipeline.feed(bucket(warm + 1))  # the tick the snapshot below runs beside
        return seconds

    async def next_tick() -> None:
        await pipeline.feed([Mention("closer2", t0 + 60 * (warm + 2) + lateness + 1, brands[0],
                                     "twitter", "x", sentiment=0.1)])

    found: list[float] = []
    seconds = asyncio.run(run())
    tick = (f"pipeline tick, {series:,} series (windows+detect+incidents)",
            f"{seconds * 1e3:.0f} ms", f"{seconds / series * 1e6:.0f} µs per series "
            f"({found[1] * 1e3:.0f} ms in the detect stage), {found[0]:.0f} anomalies; "
            f"detectors {warm} buckets old")
    with tempfile.TemporaryDirectory() as tmp:
        path = snapshots.path_in(Path(tmp))
        start = time.perf_counter()
        size = snapshots.save(path, pipeline.detect, pipeline.windows)
        saved = time.perf_counter() - start
        aside, stall, beside, copied = asyncio.run(_save_aside(path, pipeline, next_tick))
        pipeline.close()
        restarted = Pipeline(cfg, SimClock())
        start = time.perf_counter()
        assert snapshots.load(path, restarted.detect, restarted.windows)
        loaded = time.perf_counter() - start
        restarted.close()
    return [tick, (f"detector snapshot, {series:,} series", f"{size / 2**20:.0f} MiB",
                   f"written in {aside:.2f} s by a forked child, the event loop's longest "
                   f"stall meanwhile {stall * 1e3:.0f} ms; a tick beside it {beside * 1e3:.0f} ms,"
                   f" copying {copied:.0f} MiB of shared pages (saved in the daemon itself, as "
                   f"at shutdown: {saved:.2f} s); loaded into a restarted pipeline in "
                   f"{loaded:.2f} s ({size / series / 1024:.1f} KiB per series)")]


def _private_dirty_mib() -> float:
    """This process's private dirty memory: after a fork, what it has copied since."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) / 1024
    return math.nan


async def _save_aside(path: Path, pipeline: Any, tick: Callable[[], Awaitable[None]]
                      ) -> tuple[float, float, float, float]:
    """The periodic snapshot as the daemon takes it: its duration; the longest the event
    loop went without running (a 1 ms heartbeat's longest gap) in its first 0.2 s; and
    a tick run while the child writes: its duration and the MiB it copied (copy on write)."""
    from daemon import snapshots

    gaps = [0.0]

    async def heartbeat() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    gaps.clear()
    start = time.perf_counter()
    saving = asyncio.create_task(
        snapshots.save_aside(path, pipeline.detect, pipeline.windows, timeout=600))
    await asyncio.sleep(0.2)
    beat.cancel()
    stall = max(gaps)
    shared = _private_dirty_mib()
    begun = time.perf_counter()
    await tick()
    beside = time.perf_counter() - begun
    copied = _private_dirty_mib() - shared
    await saving
    return time.perf_counter() - start, stall, beside, copied


# ---------------------------------------------------------------------- soak


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    """VmHWM: this process image's peak RSS (``ru_maxrss`` would carry over the
    forking parent's high-water mark across exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def soak_child(count: int) -> None:
    """In a child process: feed ``count`` mentions, print RSS figures as JSON."""
    from publisher import WORDS

    from daemon import config, logs
    from daemon.clock import SimClock
    from daemon.domain import Mention
    from daemon.pipeline import Pipeline

    logs.setup("error")
    pipeline = Pipeline(config.Config(), SimClock())
    rng = random.Random(5)
    t0 = 1_767_225_600.0
    step = 0.6  # 100 mentions a minute over 20 series: a week of event time per million
    series = [(f"b{i}", c) for i in range(10) for c in ("twitter", "facebook")]
    marks: dict[str, float] = {}
    trace: list[tuple[int, float, float]] = []  # (mentions, RSS, peak RSS) every 5%
    batch = 1000

    async def run() -> float:
        start = time.perf_counter()
        for base in range(0, count, batch):
            items = []
            for i in range(base, min(count, base + batch)):
                brand, channel = series[i % len(series)]
                text = " ".join(rng.choice(WORDS) for _ in range(12))
                items.append(Mention(f"s{i}", t0 + i * step, brand, channel, text,
                                     followers=rng.randrange(5000),
                                     sentiment=rng.uniform(-0.5, 0.8)))
            await pipeline.feed(items)
            done = base + batch
            if done == count // 5:
                marks["rss_20"] = _rss_mib()
            if done % (count // 20) == 0:
                trace.append((done, round(_rss_mib(), 1), round(_peak_mib(), 1)))
        marks["rss_end"] = _rss_mib()
        return time.perf_counter() - start

    seconds = asyncio.run(run())
    pipeline.close()
    peak = _peak_mib()
    print(json.dumps({"seconds": seconds, "peak": peak, **marks, "trace": trace,
                      "days": count * step / 86400, "mentions": pipeline.stats.mentions}))


def soak_rows(count: int) -> list[Row]:
    """Run the soak in a child process (its own RSS) and report it."""
    out = _child([str(Path(__file__).relative_to(ROOT)), "--soak-child", str(count)], 1800)
    data = json.loads(out.strip().splitlines()[-1])
    growth = data["rss_end"] - data["rss_20"]
    return [
        (f"soak: {count:,} mentions, 20 series, {data['days']:.1f} days",
         f"{count / data['seconds']:,.0f} mentions/s", "replay into the pipeline, one process"),
        ("soak: peak RSS", f"{data['peak']:.0f} MiB", "VmHWM of the child process"),
        ("soak: RSS growth 20% → 100% of the stream", f"{growth:+.1f} MiB",
         f"{data['rss_20']:.0f} → {data['rss_end']:.0f} MiB"),
    ]


# ------------------------------------------------------------ spike to page


async def spike_to_page() -> list[Row]:
    """Delay from the first spike mention of the demo crisis to the PagerDuty request."""
    from servers.http import HttpStub, Reply

    from daemon import config, demo, logs
    from daemon.assembly import assemble
    from daemon.clock import RealClock
    from daemon.domain import IncidentChange, IncidentEvent, Mention

    logs.setup("error")
    os.environ["CRISISD_TARGET_PD_SECRET"] = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY42"
    stub = await HttpStub(Reply(202, {"status": "success", "message": "ok"})).start()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config.load(ROOT / "config.yaml").model_copy(update={
            "state_dir": Path(tmp),
            "targets": {"pd": config.TargetConfig(type="pagerduty", url=stub.url)},
            "playbooks": config.PlaybooksConfig(dir=ROOT / "playbooks"),
        })
        pipeline, response = assemble(cfg, RealClock())
        assert response is not None
        opened: list[IncidentEvent] = []

        def on_event(event: IncidentEvent) -> None:
            if event.change is IncidentChange.OPENED and event.at >= demo.CRISIS_AT - 300:
                opened.append(event)

        pipeline.listeners.append(on_event)
        await response.start()
        records = list(demo.mentions())
        first_spike = next(r["ts"] for r in records if r["ts"] >= demo.CRISIS_AT)
        calm = [r for r in records if r["ts"] < demo.CRISIS_AT - 600]
        for i in range(0, len(calm), 500):
            await pipeline.feed([Mention(**r) for r in calm[i:i + 500]])
        trigger_ts = trigger_wall = 0.0
        for r in records[len(calm):]:  # one mention at a time, as they would arrive live
            trigger_ts, trigger_wall = r["ts"], time.monotonic()
            await pipeline.feed([Mention(**r)])
            if opened:
                break
        deadline = time.monotonic() + 10
        while not stub.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        page_at = stub.requests[0].at if stub.requests else float("nan")
        await response.stop()
        pipeline.close()
    await stub.stop()
    waiting = trigger_ts - first_spike
    processing = page_at - trigger_wall
    bucket_end = opened[0].incident.first.end if opened else float("nan")
    return [
        ("spike → pager request (live, event time = wall time)",
         f"{waiting + processing:.1f} s",
         f"the alerting bucket ends {bucket_end - first_spike:.0f} s after the first spike "
         f"mention and closes {cfg.windows.lateness:.0f} s later (lateness); then "
         f"{processing * 1e3:.0f} ms processing and delivery"),
    ]


# ---------------------------------------------------------------------- main


def table(rows: list[Row], markdown: bool) -> str:
    """The one table, aligned text or Markdown."""
    if markdown:
        lines = ["| measurement | figure | notes |", "| --- | ---: | --- |"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
        return "\n".join(lines)
    wa = max(len(a) for a, _, _ in rows)
    wb = max(len(b) for _, b, _ in rows)
    return "\n".join(f"{a:<{wa}}  {b:>{wb}}  {c}" for a, b, c in rows)


def main() -> None:
    """Run everything and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    ap.add_argument("--soak", type=int, default=1_000_000, help="mentions in the soak")
    ap.add_argument("--series", type=int, default=10_000, help="series in the pipeline tick")
    ap.add_argument("--markdown", action="store_true", help="a Markdown table (for README)")
    ap.add_argument("--soak-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.soak_child:
        soak_child(args.soak_child)
        return
    started = time.perf_counter()
    rows: list[Row] = []
    rows += pipeline_rows(args.quick)
    rows += detection_rows()
    rows += delivery_rows()
    print("\n# pipeline tick", file=sys.stderr, flush=True)
    rows += pipeline_tick(args.series, 5 if args.quick else 20)
    print("# soak", file=sys.stderr, flush=True)
    rows += soak_rows(100_000 if args.quick else args.soak)
    print("# spike to page", file=sys.stderr, flush=True)
    rows += asyncio.run(spike_to_page())
    cores = os.cpu_count()
    load = os.getloadavg()[0]
    print(f"\ncrisisd benchmarks ({cores} cores, load average {load:.1f} at the end, "
          f"{time.perf_counter() - started:.0f} s in all)\n")
    print(table(rows, args.markdown))


if __name__ == "__main__":
    main()
