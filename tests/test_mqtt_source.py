"""MqttSource against a real mosquitto: delivery, batches, bad payloads,
restarts without loss, ticks, and clean stops."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from conftest import Mosquitto, mention, publish, wait_for

from daemon.config import MqttConfig
from daemon.domain import Event, Mention, MetricPoint
from daemon.sources import Tick
from daemon.sources.mqtt import MqttSource, backoff_delay

T = "crisisd/mentions/acme/twitter"


def config(broker: Mosquitto, **overrides: Any) -> MqttConfig:
    settings: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": f"crisisd-test-{random.randrange(1 << 30)}",
        "idle_tick": 30.0,
        "reconnect_min": 0.1,
        "reconnect_max": 0.5,
        "keepalive": 5,
    }
    settings.update(overrides)
    return MqttConfig(**settings)


class Collector:
    """Runs a source's stream in a task and keeps what it yields."""

    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.batches: list[list[Event]] = []
        self.ticks: list[Tick] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for item in self.source.stream():
            if isinstance(item, Tick):
                self.ticks.append(item)
            else:
                self.batches.append(item)

    @property
    def events(self) -> list[Event]:
        return [e for batch in self.batches for e in batch]

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.events if isinstance(e, Mention)]

    async def subscribed(self) -> None:
        await asyncio.wait_for(self.source.subscribed.wait(), 10)

    async def close(self) -> None:
        self.source.stop()
        await asyncio.wait_for(self.task, 10)


async def start(source: MqttSource) -> Collector:
    collector = Collector(source)
    await collector.subscribed()
    return collector


async def test_published_mentions_and_metrics_arrive_decoded(mosquitto: Mosquitto) -> None:
    c = await start(MqttSource(config(mosquitto)))
    await publish(
        mosquitto,
        [
            (T, mention(1, ts="2026-11-23T10:00:00.250Z", author="ann", followers=12)),
            (T, mention(2, sentiment=-0.5)),
            ("crisisd/metrics/acme/facebook", {"ts": 1_700_000_000, "volume": 40, "negative": 9}),
        ],
    )
    await wait_for(lambda: len(c.events) == 3)
    await c.close()
    first, second, metric = c.events
    assert isinstance(first, Mention) and first.id == "m1"
    assert (first.brand, first.channel, first.author, first.followers) == (
        "acme",
        "twitter",
        "ann",
        12,
    )
    assert first.ts == datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC).timestamp()
    assert second.sentiment == -0.5 and first.sentiment is None
    assert metric == MetricPoint(1_700_000_000.0, "acme", "facebook", 40, 9, None)
    assert c.source.decoder.valid == {"mentions": 2, "metrics": 1}
    assert not c.source.decoder.invalid


async def test_a_batch_message_is_one_batch(mosquitto: Mosquitto) -> None:
    c = await start(MqttSource(config(mosquitto)))
    await publish(mosquitto, [(T, [mention(i) for i in range(250)])])
    await wait_for(lambda: len(c.events) == 250)
    await c.close()
    assert len(c.batches) == 1
    assert c.ids == [f"m{i}" for i in range(250)]


async def test_bad_payloads_are_counted_and_skipped_good_ones_arrive(
    mosquitto: Mosquitto,
) -> None:
    cfg = config(mosquitto, max_payload=4096, deadletter=True)
    c = await start(MqttSource(cfg))
    bad = [
        (T, b"{not json"),
        (T, b"x" * 5000),
        (T, b"42"),
        (T, {"ts": 1_700_000_000, "text": "no id"}),
        (T, mention(90, followers="many")),
        (T, mention(91, sentiment=3)),
        (T, mention(92, ts="yesterday")),
        ("crisisd/mentions//twitter", mention(93)),
        ("crisisd/metrics/acme/twitter", {"ts": 1_700_000_000, "volume": 3, "negative": 5}),
    ]
    messages: list[tuple[str, Any]] = []
    for i, item in enumerate(bad):
        messages += [(T, mention(i)), item]
    messages.append((T, [mention(100), {"id": "x5"}, mention(101), "text", mention(102)]))
    await publish(mosquitto, messages)

    await wait_for(lambda: len(c.events) == len(bad) + 3)
    await wait_for(lambda: c.source.decoder.invalid.total() == len(bad) + 2)
    await c.close()
    assert c.ids == [f"m{i}" for i in range(len(bad))] + ["m100", "m101", "m102"]
    assert c.source.decoder.invalid == {
        "bad_json": 1,
        "too_large": 1,
        "not_object": 2,
        "missing_field": 2,
        "wrong_type": 1,
        "out_of_range": 2,
        "bad_timestamp": 1,
        "bad_topic": 1,
    }
    assert c.source.deadlettered == len(bad) + 1


async def test_deadletters_are_republished_raw(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, deadletter=True)
    c = await start(MqttSource(cfg))
    received: list[bytes] = []
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as watcher:
        await watcher.subscribe("crisisd/deadletter", qos=0)
        await publish(mosquitto, [(T, b"{oops"), (T, mention(1)), (T, [mention(2), {"id": 3}])])

        async def collect() -> None:
            async for message in watcher.messages:
                received.append(bytes(message.payload))  # type: ignore[arg-type]
                if len(received) == 2:
                    return

        await asyncio.wait_for(collect(), 10)
    await c.close()
    assert received[0] == b"{oops"
    assert b'"id": 3' in received[1]
    assert c.ids == ["m1", "m2"]


async def test_broker_restart_loses_no_qos1_message_published_while_away(
    mosquitto: Mosquitto,
) -> None:
    # A long enough first backoff that the messages below are surely published
    # while the source is disconnected, into its persistent session.
    cfg = config(mosquitto, reconnect_min=2.0, reconnect_max=4.0)
    c = await start(MqttSource(cfg))
    await publish(mosquitto, [(T, mention(i)) for i in range(10)])
    await wait_for(lambda: len(c.events) == 10)
    # Let the PUBACKs leave before the broker goes: unacknowledged messages
    # would be redelivered (QoS 1 is at-least-once) and show up twice below.
    await asyncio.sleep(0.3)

    mosquitto.stop()
    await wait_for(lambda: not c.source.connected)
    mosquitto.start()
    await publish(mosquitto, [(T, mention(i)) for i in range(10, 40)])
    assert not c.source.connected, "published too late: the source was already back"

    await wait_for(lambda: len(c.events) >= 40, timeout=15)
    assert c.source.connected and c.source.connects == 2
    await publish(mosquitto, [(T, mention(i)) for i in range(40, 45)])
    await wait_for(lambda: len(c.events) == 45)
    await c.close()
    assert sorted(c.ids, key=lambda s: int(s[1:])) == [f"m{i}" for i in range(45)]


async def test_persistent_session_survives_a_crisisd_and_broker_restart(
    mosquitto: Mosquitto,
) -> None:
    cfg = config(mosquitto)
    first = await start(MqttSource(cfg))
    await first.close()  # crisisd goes away; its session stays on the broker

    await publish(mosquitto, [(T, mention(i)) for i in range(25)])
    mosquitto.stop()  # the queued messages go to the broker's persistence file
    mosquitto.start()

    second = await start(MqttSource(cfg))
    await wait_for(lambda: len(second.events) == 25)
    await second.close()
    assert second.ids == [f"m{i}" for i in range(25)]


async def test_ticks_in_silence_and_none_while_disconnected(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, idle_tick=0.1, reconnect_min=0.2, reconnect_max=0.4)
    c = await start(MqttSource(cfg))
    before = time.time()
    await wait_for(lambda: len(c.ticks) >= 3, timeout=3)
    assert all(before - 1 < t.at < time.time() + 1 for t in c.ticks)

    mosquitto.stop()
    await wait_for(lambda: not c.source.connected)
    ticks = len(c.ticks)
    await asyncio.sleep(0.6)
    assert len(c.ticks) == ticks, "ticked while disconnected"
    mosquitto.start()
    await c.subscribed()
    await wait_for(lambda: len(c.ticks) > ticks, timeout=3)
    await c.close()


async def test_messages_hold_back_ticks(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto, idle_tick=0.3)
    c = await start(MqttSource(cfg))
    async with aiomqtt.Client(mosquitto.host, mosquitto.port) as pub:
        for i in range(10):
            await pub.publish(T, f'{{"id":"m{i}","ts":1700000000,"text":"x"}}', qos=1)
            await asyncio.sleep(0.1)
    await wait_for(lambda: len(c.events) == 10)
    assert not c.ticks
    await c.close()


async def test_waits_for_a_broker_that_is_not_up_yet(mosquitto: Mosquitto) -> None:
    mosquitto.stop()
    source = MqttSource(config(mosquitto, reconnect_min=0.05, reconnect_max=0.2))
    c = Collector(source)
    await asyncio.sleep(0.7)
    assert not source.connected and not c.task.done()
    mosquitto.start()
    await c.subscribed()
    await publish(mosquitto, [(T, mention(1))])
    await wait_for(lambda: c.ids == ["m1"])
    await c.close()


async def test_stop_and_cancel_end_the_stream_cleanly(mosquitto: Mosquitto) -> None:
    cfg = config(mosquitto)
    c = await start(MqttSource(cfg))
    await c.close()
    assert c.task.done() and c.task.exception() is None
    assert not c.source.connected and not c.source.subscribed.is_set()

    c = await start(MqttSource(cfg))
    c.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await c.task
    # The session is free again: the same client id connects at once.
    c = await start(MqttSource(cfg))
    await c.close()


async def test_stop_loses_nothing_between_a_slow_consumer_and_the_next_run(
    mosquitto: Mosquitto,
) -> None:
    """stop() ends the stream after the batch being processed; what the client
    had received but not processed was never acknowledged and stays in the
    persistent session for the next run. Together: every message.

    Not "exactly once": stopping while the broker streams closes a socket
    with unread data, the kernel answers with a reset, and the broker may
    lose the last PUBACKs and redeliver those messages (QoS 1 is at least
    once). Within one run nothing repeats.
    """
    cfg = config(mosquitto, max_unacked=5000)  # the whole backlog fits the window
    await (await start(MqttSource(cfg))).close()  # the session exists
    await publish(mosquitto, [(T, mention(i)) for i in range(2000)])  # queued offline

    source = MqttSource(cfg)
    first: list[str] = []

    async def slow_consumer() -> None:
        async for item in source.stream():
            if isinstance(item, Tick):
                continue
            first.extend(e.id for e in item if isinstance(e, Mention))
            if len(first) == 1:
                source.stop()
            await asyncio.sleep(0.001)

    await asyncio.wait_for(slow_consumer(), 30)
    assert first == ["m0"], "stop() went on past the batch being processed"

    second = await start(MqttSource(cfg))
    everything = {f"m{i}" for i in range(2000)}
    await wait_for(lambda: set(first) | set(second.ids) == everything)
    await second.close()
    assert len(set(second.ids)) == len(second.ids)


async def slow_consumer(source: MqttSource, done: list[str]) -> None:
    """Take the stream a millisecond a batch (the work; a kill here loses the batch's)."""
    async for item in source.stream():
        if not isinstance(item, Tick):
            await asyncio.sleep(0.001)
            done.extend(e.id for e in item if isinstance(e, Mention))


async def killed_mid_backlog(broker: Mosquitto, cfg: MqttConfig,
                             count: int) -> tuple[MqttSource, list[str]]:
    """A consumer cancelled mid-batch after 300 of ``count`` messages queued while
    it was away: its source, and the mentions it had finished."""
    await (await start(MqttSource(cfg))).close()  # the session exists
    await publish(broker, [(T, mention(i)) for i in range(count)])
    source, done = MqttSource(cfg), []
    task = asyncio.create_task(slow_consumer(source, done))
    await wait_for(lambda: len(done) >= 300)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return source, done


async def test_a_consumer_killed_mid_flood_loses_nothing(mosquitto: Mosquitto) -> None:
    """Only processed messages are acknowledged: a consumer that dies (here its
    task is cancelled, mid-batch) leaves everything it had not finished to the
    broker, which hands it to the next run. Acknowledging on receipt lost
    whatever sat in the client's queue."""
    cfg = config(mosquitto, max_unacked=5000)  # the whole backlog fits the window
    source, done = await killed_mid_backlog(mosquitto, cfg, 2000)
    second = await start(MqttSource(cfg))
    everything = {f"m{i}" for i in range(2000)}
    await wait_for(lambda: set(done) | set(second.ids) == everything)
    await second.close()
    assert source.backlog == second.source.backlog == 0  # nothing held once closed
    assert source.acked_early == 0


async def test_past_the_window_a_kill_loses_only_what_was_acknowledged_early(
    mosquitto: Mosquitto,
) -> None:
    """With a backlog larger than ``max_unacked``, the oldest waiting messages
    are acknowledged on receipt: a consumer killed then loses at most those,
    and the broker redelivers every other unprocessed one."""
    cfg = config(mosquitto, max_unacked=100)
    source, done = await killed_mid_backlog(mosquitto, cfg, 2000)
    assert source.acked_early > 0
    second = await start(MqttSource(cfg))
    everything = {f"m{i}" for i in range(2000)}
    await wait_for(lambda: len(second.ids) >= 2000 - len(done) - source.acked_early)
    await asyncio.sleep(0.3)  # nothing more is coming
    await second.close()
    lost = everything - set(done) - set(second.ids)
    assert len(lost) <= source.acked_early
    assert len(lost) > 0  # a kill past the window does cost something: the trade is real


async def test_a_flood_loses_nothing_at_mosquittos_default_queue_limits(tmp_path: Path) -> None:
    """mosquitto counts unacknowledged messages against ``max_queued_messages``
    (1000 by default) and drops new ones past it. Holding every PUBACK until
    a slow consumer had processed its message lost 1,300 of these 3,000; the
    acknowledgement window keeps the count under the limit."""
    broker = Mosquitto(tmp_path / "defaults", max_queued=1000, max_inflight=20)
    broker.workdir.mkdir()
    broker.start()
    try:
        source = MqttSource(config(broker))  # max_unacked: 500
        done: list[str] = []
        task = asyncio.create_task(slow_consumer(source, done))
        await asyncio.wait_for(source.subscribed.wait(), 10)
        await publish(broker, [(T, mention(i)) for i in range(3000)])
        await wait_for(lambda: len(set(done)) == 3000, timeout=30)
        assert source.acked_early > 0
        source.stop()
        await asyncio.wait_for(task, 10)
    finally:
        broker.stop()


def test_backoff_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, 1.0, 60.0, rng) for a in range(12)]
    assert delays[0] == 1.0
    for attempt, delay in enumerate(delays):
        cap = min(60.0, 2.0**attempt)
        assert max(1.0, cap / 2) <= delay <= cap
    assert len({round(d, 6) for d in delays[3:]}) > 1
    assert backoff_delay(10_000, 1.0, 60.0, rng) <= 60.0
    assert backoff_delay(0, 0.0, 0.0, rng) >= 0.05  # a zero config never spins
