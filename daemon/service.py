"""``crisisd run``: the live daemon.

Subscribes to the broker, feeds the pipeline on the real clock, runs the
playbooks, and stops cleanly on SIGTERM or SIGINT: the source is stopped,
what was received is processed, deliveries are drained, state is saved and
the process exits 0 so systemd records a clean stop. SIGHUP re-reads
config.yaml and the playbooks; an invalid set is rejected with the same
located errors as ``crisisd validate`` and the last good set keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import structlog

from daemon import config as config_mod
from daemon import metrics, snapshots
from daemon.api import ControlApi
from daemon.assembly import assemble
from daemon.clock import RealClock
from daemon.config import Config
from daemon.decode import Decoder
from daemon.journal import Journal
from daemon.pipeline import Pipeline
from daemon.response import Response
from daemon.sdnotify import Notifier
from daemon.sources.mqtt import MqttSource
from daemon.yamlfile import FileProblems

log = structlog.get_logger("crisisd.service")

JOURNAL = "journal.bin"
DRAIN_SECONDS = 10.0
"""How long a stop waits for received mentions to go through the pipeline."""


async def _announce_ready(source: MqttSource, notifier: Notifier) -> None:
    """Tell systemd READY=1 once the broker subscription is first live."""
    await source.subscribed.wait()
    notifier.ready(status="subscribed; watching mentions")
    log.info("ready")


async def _recover(pipeline: Pipeline, journal: Journal, saver: Snapshotter) -> None:
    """Replay what arrived after the last snapshot (a crash), then journal anew.

    A journal that held anything is folded into a snapshot and emptied, even
    when it held only a record the crash cut short: the batches recorded
    next must not follow a torn one, where a replay would stop.
    """
    mentions = 0
    for batch in journal.replay():
        await pipeline.feed(batch)
        mentions += len(batch)
    pipeline.journal = journal
    if mentions:
        log.warning("replayed the journal after an unclean stop", mentions=mentions)
    if journal.size:
        saver.save()


class Snapshotter:
    """Saves the detectors' state, keeps the journal to what no snapshot holds yet, and
    counts how it went (``/metrics``: while snapshots fail the journal, which no
    snapshot then empties, grows without end, and so does the replay after a crash)."""

    def __init__(self, pipeline: Pipeline, path: Path) -> None:
        self.pipeline = pipeline
        self.path = path
        self.stats = snapshots.SnapshotStats()

    async def every(self, interval: float) -> None:
        """Save periodically, each time from a forked child given until the next."""
        while True:
            await asyncio.sleep(interval)
            await self.save_aside(timeout=interval)

    async def save_aside(self, timeout: float) -> None:
        """Snapshot from a forked child (:func:`daemon.snapshots.save_aside`).

        What arrives while the child writes stays in the journal; a failed
        snapshot leaves the journal whole, so a crash still loses nothing.
        """
        pipeline = self.pipeline
        mark = pipeline.journal.size if pipeline.journal is not None else 0
        start = time.monotonic()
        try:  # (no await before the fork: ``mark`` is where the snapshot's state ends)
            size = await snapshots.save_aside(self.path, pipeline.detect, pipeline.windows,
                                              timeout)
        except OSError as exc:  # no memory or process to fork: save on the event loop instead
            log.warning("could not fork the snapshot writer; saving in the daemon itself",
                        error=str(exc))
            self.save()
            return
        except (snapshots.SnapshotFailed, TimeoutError) as exc:
            self.stats.failed += 1
            log.error("detector snapshot failed; the journal keeps what it would have held",
                      path=str(self.path), error=str(exc) or f"not written within {timeout:.0f} s")
            return
        if pipeline.journal is not None:
            pipeline.journal.forget_before(mark)
        self._saved(size, time.monotonic() - start)

    def save(self) -> None:
        """Snapshot in place (at shutdown, after a recovery); the journal then starts afresh."""
        start = time.monotonic()
        try:
            size = snapshots.save(self.path, self.pipeline.detect, self.pipeline.windows)
        except Exception as exc:  # a disk, or a state pickle refuses: the daemon goes on
            self.stats.failed += 1
            log.error("detector snapshot failed; the journal keeps what it would have held",
                      path=str(self.path), error=f"{type(exc).__name__}: {exc}")
            return
        if self.pipeline.journal is not None:
            self.pipeline.journal.reset()
        self._saved(size, time.monotonic() - start)

    def _saved(self, size: int, seconds: float) -> None:
        self.stats.saved(size, seconds)
        log.info("detector snapshot saved", bytes=size, series=self.pipeline.detect.series_count,
                 seconds=round(seconds, 2))


def reload(
    path: Path | None, pipeline: Pipeline, response: Response | None, notifier: Notifier
) -> list[str]:
    """Apply a re-read config and playbook set, or keep the running one.

    Returns the problems that rejected it (empty when the new set is live).
    Detector state, open incidents, pending timers and the outbox are kept:
    only settings and playbooks change. Broker, window and detection settings
    need a restart (the subscription, the open buckets and the learnt
    baselines depend on them).
    """
    notifier.reloading()
    try:
        new = config_mod.load(path)
        problems = response.reload(new) if response is not None else []
        if problems:
            raise FileProblems(problems)
    except FileProblems as exc:
        log.error(
            "reload rejected; the last good configuration keeps running",
            problems=[str(p) for p in exc.problems],
        )
        notifier.ready(status="reload rejected; running the last good set")
        return [str(p) for p in exc.problems]
    kept = {name: getattr(pipeline.cfg, name) for name in ("mqtt", "windows", "detection")}
    changed = [name for name, section in kept.items() if getattr(new, name) != section]
    if changed:
        log.warning("these settings change only on restart; kept as they run",
                    sections=changed)
    pipeline.cfg = new.model_copy(update=kept)
    log.info("reloaded", playbooks=len(response.playbooks) if response else 0)
    notifier.ready(status="reloaded")
    return []


async def serve(cfg: Config, path: Path | None = None, notifier: Notifier | None = None) -> int:
    """Run until a stop signal; the process exit status."""
    notifier = notifier or Notifier()
    decoder = Decoder(prefix=cfg.mqtt.prefix, max_payload=cfg.mqtt.max_payload,
                      max_ahead=cfg.windows.max_ahead)
    source = MqttSource(cfg.mqtt, decoder)
    pipeline, response = assemble(cfg, RealClock())
    if cfg.windows.max_ahead is not None:
        pipeline.wall = time.time
    saver = Snapshotter(pipeline, snapshots.path_in(cfg.state_dir))
    snapshots.load(saver.path, pipeline.detect, pipeline.windows)
    journal = Journal(cfg.state_dir / JOURNAL)
    await _recover(pipeline, journal, saver)
    pipeline.meet_the_clock()
    latency = metrics.DeliveryLatency()
    if response is not None:
        latency.attach(response.engine.outbox)
        await response.start()
    api = ControlApi(cfg.api, pipeline, response=response, source=source, decoder=decoder,
                     latency=latency, snapshots=saver.stats,
                     reload=lambda: reload(path, pipeline, response, notifier))
    if cfg.api.enabled:
        try:
            await api.start()
        except OSError as exc:  # detection and delivery matter more than the control plane
            log.error("control API not started; running without it",
                      listen=cfg.api.listen, error=str(exc))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: reload(path, pipeline, response, notifier)
    )
    log.info("starting", broker=f"{cfg.mqtt.host}:{cfg.mqtt.port}", prefix=cfg.mqtt.prefix)
    runner = asyncio.create_task(pipeline.run(source), name="pipeline")
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    helpers = [
        asyncio.create_task(_announce_ready(source, notifier), name="sd-ready"),
        asyncio.create_task(notifier.watchdog(), name="sd-watchdog"),
        asyncio.create_task(
            saver.every(cfg.detection.snapshot_interval),
            name="snapshots",
        ),
    ]
    try:
        done, _ = await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if runner in done:
            runner.result()  # a crash of the pipeline propagates
            return 1
        log.info("stopping", reason="signal")
        notifier.stopping()
        source.stop()  # the stream ends after what was already received
        try:
            await asyncio.wait_for(runner, DRAIN_SECONDS)
        except TimeoutError:
            log.warning("drain timed out; stopping anyway", seconds=DRAIN_SECONDS)
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    finally:
        stopper.cancel()
        for task in helpers:
            task.cancel()
        # A snapshot child still writing is killed before the final save below, which
        # it could otherwise overwrite with an older state when it finished last.
        await asyncio.gather(*helpers, return_exceptions=True)
        await api.stop()
        pipeline.close()
        saver.save()
        journal.close()
        if response is not None:
            await response.stop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    log.info(
        "stopped",
        mentions=pipeline.stats.mentions,
        invalid=sum(decoder.invalid.values()),
        incidents_open=len(pipeline.incidents.open),
    )
    return 0
