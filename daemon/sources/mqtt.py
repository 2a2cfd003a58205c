"""The live source: mentions and metrics from an MQTT broker.

The contract is in README ("MQTT contract") and ``daemon/decode.py``. What
this module adds is staying connected:

- **Persistent session.** MQTT 3.1.1 with ``clean_session=False`` and the
  configured, stable client id, subscribed at QoS 1: the broker queues what
  is published while crisisd restarts or is cut off, and delivers it on
  reconnect. A crisis does not wait for a deploy.
- **Reconnect forever.** Any broker or network error ends the connection,
  not the daemon: it is logged, then retried after a capped exponential
  backoff with jitter (``reconnect_min`` doubling up to ``reconnect_max``),
  so a broker outage neither crashes crisisd nor makes it spin. Messages
  received but not yet processed when a connection drops were not
  acknowledged: the broker delivers them again on the next connection.
- **Ticks only while connected.** In silence the source yields a ``Tick``
  every ``idle_tick`` seconds so buckets close on a quiet broker. While
  disconnected it stays silent on purpose: ticking then would close buckets
  as "volume 0" that the broker is still holding mentions for, and those
  mentions would arrive late and be dropped.
- **Cheap per message.** aiomqtt's message iterator creates a task per
  message; while messages are queued this source takes them straight from the
  client's queue instead, and only waits through the iterator (which is what
  notices a dropped connection) when the queue is empty. No per-message logging.

- **Acknowledged once processed, within a window.** A QoS 1 message is
  acknowledged (PUBACK) only when the consumer comes back for the next item,
  that is once the pipeline has journaled and counted it, not on receipt as
  the MQTT library would: a ``kill -9`` loses nothing the broker handed over,
  since whatever was not yet processed was not acknowledged and the broker
  redelivers it. Unacknowledged messages also hold the broker back (it sends
  about ``max_inflight_messages`` ahead), so a backlog mostly waits in the
  broker rather than in crisisd's memory. At most ``max_unacked`` messages
  wait so; when the broker sends more at once (mosquitto 2.0.11 does, in
  bursts), the oldest waiting one is acknowledged at once (acknowledgements
  stay in order, as MQTT asks), because the broker counts unacknowledged
  messages against its queue limit (``max_queued_messages``, 1000 by
  default) and silently drops new ones past it: a 3,000-message flood into a
  slow consumer lost 1,300 without the window. Past the window a ``kill -9``
  can lose what was acknowledged early (``acked_early`` counts it). The
  broker's queue limit itself must be raised for crisisd (README, Deploy): at
  mosquitto's defaults a publisher that outpaces any subscriber for more than
  a thousand messages loses messages at the broker, even one that
  acknowledges on receipt. ``backlog`` (the ``crisisd_mqtt_backlog`` gauge)
  says how far processing is behind what was received.

``stop()`` ends the stream after the batch being processed and disconnects;
what was received but not processed stays in the broker's session for the
next run. Delivery is at least once, not exactly once: after a broken
connection (or a reset while the broker was streaming) the broker redelivers
what it has no PUBACK for, and some of it may already have been processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiomqtt
import structlog

from daemon.config import MqttConfig
from daemon.decode import Decoder
from daemon.sources import SourceItem, Tick

log = structlog.get_logger(__name__)

#: Acknowledges one received message to the broker.
Ack = Callable[[aiomqtt.Message], None]

#: A connection that stayed up this long resets the backoff to ``reconnect_min``.
STABLE_AFTER = 10.0
#: Floor of any reconnect delay, whatever the configuration says: never spin.
MIN_DELAY = 0.05


class Inbox(asyncio.Queue[aiomqtt.Message]):
    """The client's queue of received messages, keeping the acknowledgement window.

    aiomqtt puts every message it receives here (``queue_type``); the source
    takes them in order. QoS 1 messages are also kept, in order, until
    :meth:`processed` acknowledges them, and at most ``window`` of them: past
    that, receiving one acknowledges the oldest (see the module docstring for
    why). Acknowledgements therefore go out in the order the messages came.
    """

    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window
        self.acknowledge: Ack | None = None  # set once the client exists
        self.acked_early = 0
        self._unacked: deque[aiomqtt.Message] = deque()
        self._full = False

    def put_nowait(self, item: aiomqtt.Message) -> None:
        """Queue a received message; acknowledge the oldest waiting one past the window."""
        if item.qos > 0 and self.acknowledge is not None:
            self._unacked.append(item)
            if len(self._unacked) > self.window:
                self.acknowledge(self._unacked.popleft())
                self.acked_early += 1
                if not self._full:
                    self._full = True
                    log.warning("mqtt_ack_window_full", window=self.window,
                                backlog=self.qsize() + 1,
                                why="acknowledging on receipt until processing catches up")
        super().put_nowait(item)

    def processed(self, message: aiomqtt.Message) -> None:
        """Acknowledge ``message`` now that it is processed, unless that was done early."""
        if self._unacked and self._unacked[0] is message:
            self._unacked.popleft()
            if self.acknowledge is not None:
                self.acknowledge(message)
            if self._full and len(self._unacked) <= self.window // 2:
                self._full = False


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based).

    The cap doubles from ``low`` up to ``high``; the delay is drawn in the upper
    half of it ("equal jitter"), so many daemons restarting with one broker
    spread out while each still waits at least half the cap.
    """
    low = max(low, MIN_DELAY)
    high = max(high, low)
    cap = min(high, low * 2.0 ** min(attempt, 62))
    return (rng or random).uniform(max(low, cap / 2), cap)


class MqttSource:
    """Mentions and metrics from the broker, as a ``Source`` of event batches.

    ``stream()`` yields one ``list[Event]`` per message that holds at least one
    valid item, and a ``Tick`` after ``idle_tick`` seconds without messages.
    ``subscribed`` is set while the subscription is live (the daemon signals
    systemd ``READY=1`` on the first time); ``connected`` says whether a
    connection is up. ``decoder`` holds the valid/invalid counters.
    """

    def __init__(
        self,
        config: MqttConfig,
        decoder: Decoder | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.decoder = decoder or Decoder(config.prefix, config.max_payload)
        if config.deadletter:
            self.decoder.keep_deadletters = True
        self.subscribed = asyncio.Event()
        self.connected = False
        self.received = 0
        self.connects = 0
        self.disconnects = 0
        self.deadlettered = 0
        self.topics = [
            f"{self.decoder.prefix}/mentions/+/+",
            f"{self.decoder.prefix}/metrics/+/+",
        ]
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._inbox: Inbox | None = None
        self._acked_early = 0  # on connections that ended

    @property
    def backlog(self) -> int:
        """Messages received on this connection and not yet processed."""
        return self._inbox.qsize() if self._inbox is not None else 0

    @property
    def acked_early(self) -> int:
        """Messages acknowledged before they were processed (past the ``max_unacked`` window)."""
        return self._acked_early + (self._inbox.acked_early if self._inbox is not None else 0)

    def stop(self) -> None:
        """End the stream: disconnect, hand over what was received, return.

        Safe to call from any task, at any time, more than once.
        """
        self._stopping.set()

    def _client(self) -> tuple[aiomqtt.Client, Inbox]:
        """A fresh client for one connection attempt, and its message queue."""
        cfg = self.config
        queues: list[Inbox] = []

        def make_queue(maxsize: int = 0) -> Inbox:
            queue = Inbox(cfg.max_unacked)
            queues.append(queue)
            return queue

        client = aiomqtt.Client(
            cfg.host,
            cfg.port,
            identifier=cfg.client_id,
            clean_session=False,
            protocol=aiomqtt.ProtocolVersion.V311,
            keepalive=cfg.keepalive,
            username=cfg.username,
            password=cfg.password() if cfg.username is not None else None,
            tls_context=ssl.create_default_context() if cfg.tls else None,
            queue_type=cast(Any, make_queue),
        )
        # before connecting: a persistent session starts delivering at the CONNACK
        inbox = queues[0]
        inbox.acknowledge = _manual_acks(client)
        return client, inbox

    async def stream(self) -> AsyncIterator[SourceItem]:
        """Yield event batches and ticks until ``stop()`` or cancellation."""
        attempt = 0
        while not self._stopping.is_set():
            up_at: float | None = None
            inbox: Inbox | None = None
            error: BaseException | None = None
            try:
                client, inbox = self._client()
                self._inbox = inbox
                async with client:
                    granted = await client.subscribe([(t, self.config.qos) for t in self.topics])
                    refused = [
                        t for t, rc in zip(self.topics, granted, strict=False) if _failed(rc)
                    ]
                    if refused:
                        raise aiomqtt.MqttError(f"broker refused subscription to {refused}")
                    up_at = time.monotonic()
                    self.connected = True
                    self.connects += 1
                    self.subscribed.set()
                    log.info(
                        "mqtt_subscribed",
                        broker=f"{self.config.host}:{self.config.port}",
                        client_id=self.config.client_id,
                        topics=self.topics,
                        qos=self.config.qos,
                        attempt=attempt,
                    )
                    async with contextlib.aclosing(self._receive(client, inbox)) as items:
                        async for item in items:
                            yield item
                    # stop(): the PUBACKs of what was processed are queued before
                    # the DISCONNECT that leaving this block sends.
            except (aiomqtt.MqttError, OSError) as exc:
                error = exc
            except Exception as exc:  # never crash the daemon over the connection
                error = exc
                log.exception("mqtt_unexpected_error")
            finally:
                self.connected = False
                self.subscribed.clear()
                self._inbox = None
                if inbox is not None:
                    self._acked_early += inbox.acked_early
            if inbox is not None:
                self._leave(inbox)
            if self._stopping.is_set():
                break
            if up_at is not None:
                self.disconnects += 1
                if time.monotonic() - up_at >= min(STABLE_AFTER, self.config.reconnect_max):
                    attempt = 0
            delay = backoff_delay(
                attempt, self.config.reconnect_min, self.config.reconnect_max, self._rng
            )
            log.warning(
                "mqtt_disconnected" if up_at is not None else "mqtt_connect_failed",
                broker=f"{self.config.host}:{self.config.port}",
                error=_describe(error),
                retry_in=round(delay, 3),
                attempt=attempt,
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        log.info("mqtt_stopped", received=self.received)

    async def _receive(self, client: aiomqtt.Client, inbox: Inbox) -> AsyncIterator[SourceItem]:
        """Batches and ticks of one connection; returns on ``stop()``.

        Each message is acknowledged when the consumer comes back for the next
        item, or at once if it held nothing valid.

        Raises ``MqttError`` when the connection drops (from the iterator).
        """
        loop = asyncio.get_running_loop()
        idle = max(self.config.idle_tick, 0.01)
        decode = self.decoder.decode
        deadletters = self.decoder.keep_deadletters
        messages = client.messages
        stop_wait = asyncio.ensure_future(self._stopping.wait())
        pending: asyncio.Future[aiomqtt.Message] | None = None
        last = loop.time()
        stopping = self._stopping.is_set
        try:
            while True:
                if stopping():  # also checked here: a busy queue never waits
                    return
                if pending is None and not inbox.empty():
                    message = inbox.get_nowait()
                else:
                    if pending is None:
                        pending = asyncio.ensure_future(anext(messages))
                    done, _ = await asyncio.wait(
                        (pending, stop_wait),
                        timeout=max(0.0, last + idle - loop.time()),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if pending in done:
                        message, pending = pending.result(), None
                    elif stop_wait in done:
                        return
                    else:
                        last = loop.time()
                        yield Tick(time.time())
                        continue
                last = loop.time()
                self.received += 1
                events = decode(message.topic.value, message.payload)  # type: ignore[arg-type]
                if events:
                    yield events  # back here once the consumer has journaled them
                if deadletters:
                    await self._deadletter(client)
                inbox.processed(message)
        finally:
            stop_wait.cancel()
            # A message taken off the queue just as we stopped is not acknowledged:
            # the broker keeps it for the next run.
            if pending is not None and not pending.done():
                # Not awaited: waiting here could swallow a cancellation of
                # the consumer. The queue get inside is cancellation-safe.
                pending.cancel()
                pending.add_done_callback(_retrieve)

    def _leave(self, inbox: Inbox) -> None:
        """Leave a closed connection's unprocessed messages to the broker.

        Those not acknowledged early are in the broker's session for the next
        connection; delivering them here as well would duplicate them.
        """
        if not inbox.empty():
            log.info("mqtt_left_for_redelivery", messages=inbox.qsize())
        if self.decoder.keep_deadletters:
            dropped = self.decoder.take_deadletters()
            if dropped:
                log.warning("mqtt_deadletters_dropped", count=len(dropped), why="disconnected")

    async def _deadletter(self, client: aiomqtt.Client) -> None:
        """Republish rejected payloads, raw, at QoS 0; a failure only costs them."""
        for letter in self.decoder.take_deadletters():
            try:
                await client.publish(self.decoder.deadletter_topic, letter.payload, qos=0)
                self.deadlettered += 1
            except aiomqtt.MqttError as exc:
                log.warning("mqtt_deadletter_failed", error=str(exc), reason=letter.reason)


def _manual_acks(client: aiomqtt.Client) -> Ack:
    """Stop ``client`` acknowledging on receipt; the function that acknowledges a message.

    aiomqtt (2.5) acknowledges a QoS 1 message the moment it is queued and
    has no switch for it; paho, underneath, has one (``manual_ack``).
    """
    paho = client._client  # aiomqtt exposes no manual acknowledgement of its own
    paho.manual_ack_set(True)

    def ack(message: aiomqtt.Message) -> None:
        if message.qos > 0:
            paho.ack(message.mid, message.qos)

    return ack


def _describe(error: BaseException | None) -> str:
    """The error and its cause: aiomqtt wraps the socket error that matters."""
    if error is None:
        return "closed"
    text = str(error) or type(error).__name__
    cause = error.__cause__
    if cause is not None and str(cause):
        text = f"{text}: {cause}"
    return text


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a finished future's outcome as seen (no "never retrieved" noise)."""
    if not future.cancelled():
        future.exception()


def _failed(code: object) -> bool:
    """Whether a SUBACK return code refuses the subscription (0x80 and up)."""
    failure = getattr(code, "is_failure", None)
    if failure is not None:
        return bool(failure)
    return isinstance(code, int) and code >= 0x80
