"""Delivery figures: outbox throughput to a local HTTP sink, and detection-to-page delay.

    .venv/bin/python bench/bench_delivery.py [--actions 2000] [--incidents 300]

Prints:
  * actions delivered per second through the real outbox (SQLite store in
    WAL mode, the real webhook integration over httpx) to a loopback HTTP
    sink, at several per-target concurrency limits;
  * the delay from an anomaly's detection — ``engine.handle`` of the OPENED
    incident event — to the PagerDuty request arriving at a loopback
    PagerDuty stand-in (the request has left crisisd), median and p99, with
    the share spent inside ``handle`` (playbook, templates, SQLite commit).

The sink runs in its own process (the tests' recording HTTP server), so it
does not share crisisd's event loop; arrival times use CLOCK_MONOTONIC, which
is the same clock in both processes on Linux. Nothing is asserted: figures
are for the README and the closing notes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ["NO_PROXY"] = "127.0.0.1"

from playbook_fixtures import T0, anomaly  # noqa: E402

from daemon import config as config_module  # noqa: E402
from daemon import logs  # noqa: E402
from daemon.actions import Action  # noqa: E402
from daemon.clock import SimClock  # noqa: E402
from daemon.engine import Engine  # noqa: E402
from daemon.incidents import IncidentManager  # noqa: E402
from daemon.outbox import Limits, Outbox  # noqa: E402
from daemon.playbook import PlaybookRouter, load  # noqa: E402
from daemon.store import Store  # noqa: E402
from daemon.targets import make  # noqa: E402

SINK = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[1])
    from servers.http import HttpStub, Reply

    async def main():
        stub = await HttpStub(Reply(202, {"status": "success"})).start()
        print(stub.port, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the bench closes stdin
        out = []
        for r in stub.requests:
            body = json.loads(r.body or b"{}")
            out.append([r.at, body.get("dedup_key") or body.get("key")])
        print(json.dumps(out), flush=True)
        await stub.stop()

    asyncio.run(main())
    """
)


class Sink:
    """A recording HTTP server in a child process; ``close`` returns (arrival, key) pairs."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SINK, str(ROOT / "tests")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def close(self) -> list[tuple[float, str]]:
        out, _ = self.proc.communicate("", timeout=60)
        return [(at, key) for at, key in json.loads(out.strip().splitlines()[-1])]


async def throughput(n: int, concurrency: int, tmp: Path) -> float:
    """Actions per second from a full outbox to the sink (queue to last answer)."""
    sink = Sink()
    try:
        target = make("hook", config_module.TargetConfig.model_validate(
            {"type": "webhook", "url": sink.url + "/hook"}), tmp)
        store = Store(tmp / f"through-{concurrency}.sqlite")
        outbox = Outbox(store, {"hook": target}, limits={"hook": Limits(concurrency)})
        with store.transaction():
            for i in range(n):
                store.enqueue(Action(f"inc-{i % 50}/chat/{i}@hook", f"inc-{i % 50}", "chat",
                                     "hook", [{"id": "ops"}], "", f"message {i}", time.time()))
        start = time.perf_counter()
        await outbox.deliver_due()
        seconds = time.perf_counter() - start
        delivered = len(store.actions(status="delivered"))
        await target.aclose()  # type: ignore[attr-defined]
        store.close()
    finally:
        arrivals = sink.close()
    assert delivered == n == len(arrivals), (delivered, n, len(arrivals))
    return n / seconds


async def ceiling(n: int, concurrency: int) -> float:
    """Requests per second of bare httpx to the same sink (no store, no outbox)."""
    import httpx

    sink = Sink()
    try:
        async with httpx.AsyncClient() as client:
            queue = list(range(n))

            async def worker() -> None:
                while queue:
                    i = queue.pop()
                    response = await client.post(sink.url + "/hook", json={"key": f"k{i}"})
                    response.raise_for_status()

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            seconds = time.perf_counter() - start
    finally:
        sink.close()
    return n / seconds


PLAYBOOK = """
name: page-only
title: Spike
priority: 1
roles:
  incident_commander: {rotation: pr-primary}
steps:
  - page: {to: incident_commander}
resolve: {after_quiet: 1h}
"""


async def detection_to_page(incidents: int, tmp: Path) -> tuple[list[float], list[float]]:
    """(seconds from handle() to arrival at the PagerDuty stand-in, seconds inside handle())."""
    from playbook_fixtures import ROSTER, write

    sink = Sink()
    os.environ["CRISISD_TARGET_PD_SECRET"] = "bench-routing-key-0123456789"
    roster = ROSTER.replace("targets:\n  rec: {type: log}\n",
                            f"targets:\n  pd: {{type: pagerduty, url: '{sink.url}'}}\n")
    write(tmp, "config.yaml", roster + f"state_dir: {tmp / 'state'}\n")
    write(tmp / "playbooks", "page.yaml", PLAYBOOK)
    config = config_module.load(tmp / "config.yaml")
    playbooks = load(tmp / "playbooks", config)
    engine = Engine(config, playbooks, SimClock(T0), Store.in_dir(config.state_dir))
    manager = IncidentManager(PlaybookRouter(playbooks), lambda a: None)
    await engine.start()
    sent: dict[str, float] = {}
    inside: list[float] = []
    try:
        for i in range(incidents):
            events = manager.observe(anomaly(T0, brand=f"brand{i:04d}"))
            start = time.monotonic()
            for event in events:
                engine.handle(event)
            inside.append(time.monotonic() - start)
            sent[f"crisisd/{events[0].incident.id}"] = start
            await asyncio.sleep(0.01)  # one detection at a time: the delay, not a queue
        deadline = time.monotonic() + 30
        while engine.store.actions(status="pending") and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await engine.stop()
        engine.store.close()
    finally:
        arrivals = sink.close()
    delays = [at - sent[key] for at, key in arrivals if key in sent]
    return delays, inside


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=2000)
    parser.add_argument("--incidents", type=int, default=300)
    args = parser.parse_args()
    logs.setup("error")
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        print(f"outbox throughput to a loopback HTTP sink ({args.actions} webhook actions)")
        for concurrency in (1, 4, 16):
            rate = await throughput(args.actions, concurrency, tmp)
            bare = await ceiling(args.actions, concurrency)
            print(f"  concurrency {concurrency:>2}: {rate:8.0f} actions/s   "
                  f"(bare httpx to the same sink: {bare:.0f} requests/s)")
        delays, inside = await detection_to_page(args.incidents, tmp / "latency")
        print(f"detection → PagerDuty request arriving at the stand-in ({len(delays)} incidents)")
        print(f"  median {statistics.median(delays) * 1000:7.2f} ms   "
              f"p99 {pct(delays, 0.99) * 1000:7.2f} ms   max {max(delays) * 1000:7.2f} ms")
        print(f"  of which engine.handle: median {statistics.median(inside) * 1000:.2f} ms, "
              f"p99 {pct(inside, 0.99) * 1000:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
