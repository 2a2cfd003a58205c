"""Throughput of the whole pipeline: from a replay file, and live from mosquitto.

    .venv/bin/python bench/bench_pipeline.py [--count 200000] [--quick]

Prints a table of mentions per second and peak memory for:
  * replay of the demo week (with VADER for the mentions that lack a score)
    and of a large generated file (scores present), each in its own process;
  * a bare aiomqtt subscriber on the same broker (the receive ceiling);
  * ``crisisd``'s MQTT source + pipeline, fed by a separate publisher process
    through a private mosquitto, one mention per message and batches of 100.
Nothing is asserted: the figures are for the README and the closing notes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import Mosquitto  # noqa: E402  (the tests' broker launcher)
from publisher import mention  # noqa: E402

from daemon import config, demo  # noqa: E402
from daemon.clock import RealClock  # noqa: E402
from daemon.pipeline import Pipeline  # noqa: E402
from daemon.sources.mqtt import MqttSource  # noqa: E402

PUBLISHER = ROOT / "bench" / "publisher.py"


def rss_mib() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def replay_in_child(path: Path) -> tuple[float, float, str]:
    """(mentions/s, peak RSS MiB, summary) of ``crisisd replay`` in its own process."""
    code = (
        "import asyncio, json, resource, sys\n"
        "from pathlib import Path\n"
        "from daemon import backtest, config, logs\n"
        "logs.setup('warning')\n"
        "state = Path(sys.argv[1]).with_name('state')  # the reports, beside the stream\n"
        "r = asyncio.run(backtest.replay([Path(sys.argv[1])], config.Config(state_dir=state)))\n"
        "rate = (r.stats.mentions + r.stats.metrics) / r.seconds\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'rate': rate, 'rss': peak, 'summary': r.summary()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return data["rate"], data["rss"], data["summary"]


def big_stream(path: Path, count: int, brands: int = 10, rate: float = 20.0) -> None:
    """``count`` scored mentions over ``brands`` brands × 2 channels, ``rate`` per second.

    A busy stream (about 600 mentions per series-minute) so the per-mention
    path (decode, tokenise, bucket) is measured rather than per-bucket work.
    """
    rng = random.Random(3)
    start = 1_767_225_600.0
    with path.open("w") as fh:
        for i in range(count):
            record = mention(i, start + i / rate, rng)
            record["brand"] = f"b{rng.randrange(brands)}"
            record["channel"] = rng.choice(("twitter", "facebook"))
            fh.write(json.dumps(record) + "\n")


def publish(port: int, count: int, batch: int) -> subprocess.Popen[str]:
    """Start the publisher process."""
    return subprocess.Popen(
        [sys.executable, str(PUBLISHER), "--port", str(port), "--count", str(count),
         "--batch", str(batch)],
        stdout=subprocess.PIPE, text=True,
    )


async def bare_subscriber(port: int, count: int, batch: int) -> float:
    """Messages per second a bare aiomqtt subscriber receives (mentions/s)."""
    messages = -(-count // batch)
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-bare") as client:
        await client.subscribe("crisisd/mentions/+/+", qos=1)
        proc = publish(port, count, batch)
        got, first = 0, 0.0
        async for _ in client.messages:
            if got == 0:
                first = time.perf_counter()
            got += 1
            if got >= messages:
                break
        elapsed = time.perf_counter() - first
        proc.wait()
    return count / elapsed


async def crisisd_live(port: int, count: int, batch: int) -> tuple[float, int, int]:
    """Through crisisd's MQTT source and whole pipeline: (mentions per second, mentions
    received, messages acknowledged early). Gives up five seconds after the last
    progress once the publisher is done, so a broker that dropped messages ends the run."""
    cfg = config.Config.model_validate(
        {"mqtt": {"port": port, "client_id": f"bench-crisisd-{batch}"}}
    )
    pipeline = Pipeline(cfg, RealClock())
    source = MqttSource(cfg.mqtt)
    runner = asyncio.create_task(pipeline.run(source))
    await asyncio.wait_for(source.subscribed.wait(), 10)
    proc = publish(port, count, batch)
    first = last = 0.0
    seen = 0
    while pipeline.stats.mentions < count:
        now = time.perf_counter()
        if pipeline.stats.mentions != seen:
            seen, last = pipeline.stats.mentions, now
            first = first or now
        elif proc.poll() is not None and last and now - last > 5.0:
            break  # the rest is not coming
        await asyncio.sleep(0.005)
    elapsed = (last or time.perf_counter()) - first
    source.stop()  # as the daemon stops: the stream ends after the batch in hand
    await asyncio.wait_for(runner, 30)
    pipeline.close()
    proc.wait()
    return pipeline.stats.mentions / elapsed, pipeline.stats.mentions, source.acked_early


async def live(count: int) -> list[tuple[str, float, str]]:
    """The MQTT rows of the table: generous broker queue limits, then mosquitto's defaults."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for limits, label in (({}, ""), ({"max_queued": 1000, "max_inflight": 20},
                                         ", broker defaults")):
            broker = Mosquitto(Path(tmp) / f"broker{len(rows)}", **limits)
            broker.workdir.mkdir()
            broker.start()
            try:
                for batch in (1, 100) if not limits else (1,):
                    n = count if batch > 1 else min(count, 50_000)
                    if not limits:
                        rate = await bare_subscriber(broker.port, n, batch)
                        rows.append((f"bare aiomqtt subscriber, batch {batch}", rate, ""))
                    rate, got, early = await crisisd_live(broker.port, n, batch)
                    rows.append((f"crisisd run (MQTT → incidents), batch {batch}{label}", rate,
                                 f"{got:,} of {n:,} received, {early:,} acknowledged early"))
            finally:
                broker.stop()
    return rows


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000, help="mentions per MQTT run")
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    args = parser.parse_args()
    count = 20_000 if args.quick else args.count
    import structlog
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(f"{'measurement':<48} {'mentions/s':>12} {'peak RSS':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        week = Path(tmp) / "week.jsonl"
        n = demo.write(week)
        rate, rss, _ = replay_in_child(week)
        print(f"{f'replay demo week ({n:,} mentions, 10% VADER)':<48} {rate:>12,.0f} "
              f"{rss:>8.0f}MiB")
        big = Path(tmp) / "big.jsonl"
        big_stream(big, count)
        rate, rss, _ = replay_in_child(big)
        print(f"{f'replay {count:,} scored mentions, 20 series':<48} {rate:>12,.0f} "
              f"{rss:>8.0f}MiB")
    for name, rate, note in asyncio.run(live(count)):
        print(f"{name:<48} {rate:>12,.0f}  {note}")
    print(f"{'(peak RSS of the live runs, one process)':<48} {'':>12} {rss_mib():>8.0f}MiB")


if __name__ == "__main__":
    main()
