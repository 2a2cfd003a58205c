"""Prometheus text exposition of the daemon's counters (``GET /metrics``).

The counters already live where the work happens (the decoder counts
rejections by reason, the pipeline counts mentions, late events, buckets and
anomalies, the store holds every action's outcome); this module only reads
them when scraped, so a scrape costs nothing between scrapes and the hot path
carries no metrics library. The one figure nobody else keeps, the delivery
latency histogram, is recorded by ``DeliveryLatency`` from the outbox's
result callback.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from daemon.actions import Action

if TYPE_CHECKING:
    from daemon.decode import Decoder
    from daemon.outbox import Outbox
    from daemon.pipeline import Pipeline
    from daemon.response import Response
    from daemon.snapshots import SnapshotStats
    from daemon.sources.mqtt import MqttSource

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
"""Seconds from an action being queued to its delivery: sub-second when all is
well, minutes when a target is down and retries back off."""


class DeliveryLatency:
    """A histogram of queue-to-delivered seconds, fed by the outbox's result callback.

    ``attach`` chains in front of the existing callback (the engine's
    timeline writer) rather than replacing it, so the outbox code is untouched.
    """

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.outcomes: dict[tuple[str, str], int] = {}

    def observe(self, seconds: float) -> None:
        """Count one delivery that took ``seconds``."""
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def attach(self, outbox: Outbox) -> None:
        """Record every delivered action of ``outbox`` (wall time minus its queue time)."""
        previous = outbox.on_result

        def on_result(action: Action, outcome: str, detail: str) -> None:
            key = (action.target, outcome)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            if outcome == "delivered":
                self.observe(time.time() - action.created_at)
            if previous is not None:
                previous(action, outcome, detail)

        outbox.on_result = on_result

    def lines(self, name: str) -> list[str]:
        """The histogram in exposition format."""
        out = [
            f"# HELP {name} Seconds from an action being queued to its delivery.",
            f"# TYPE {name} histogram",
        ]
        running = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == math.inf else _num(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out.append(f"{name}_sum {_num(self.sum)}")
        out.append(f"{name}_count {running}")
        return out


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float]] | float,
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        if isinstance(samples, int | float):
            samples = [({}, samples)]
        for labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            series = f"{name}{{{text}}}" if text else name
            self.lines.append(f"{series} {_num(value)}")


def render(
    pipeline: Pipeline,
    *,
    decoder: Decoder | None = None,
    source: MqttSource | None = None,
    response: Response | None = None,
    latency: DeliveryLatency | None = None,
    snapshots: SnapshotStats | None = None,
    now: float | None = None,
) -> str:
    """Every metric, in the Prometheus text format (version 0.0.4)."""
    now = time.time() if now is None else now
    stats = pipeline.stats
    w = _Writer()
    w.metric("crisisd_mentions_received_total", "counter",
             "Mentions accepted by the decoder and fed to the pipeline.", stats.mentions)
    w.metric("crisisd_metric_points_received_total", "counter",
             "Pre-aggregated metric points fed to the pipeline.", stats.metrics)
    if decoder is not None:
        w.metric("crisisd_items_invalid_total", "counter",
                 "Items rejected by the decoder, by reason (the MQTT contract's reasons).",
                 [({"reason": r}, n) for r, n in sorted(decoder.invalid.items())])
    w.metric("crisisd_events_late_total", "counter",
             "Events older than the watermark (beyond allowed lateness), dropped.", stats.late)
    w.metric("crisisd_events_refused_total", "counter",
             "Events of new series past windows.max_series, dropped.",
             pipeline.windows.stats.refused)
    w.metric("crisisd_buckets_closed_total", "counter",
             "Closed windows (one per series per bucket) run through the detectors.",
             stats.buckets)
    w.metric("crisisd_anomalies_total", "counter",
             "Anomalies detected, by signal, severity and direction (volume down: the feed "
             "or the brand gone quiet).",
             [({"signal": s, "severity": sev, "direction": way}, n)
              for (s, sev, way), n in sorted(stats.anomalies.items())])
    w.metric("crisisd_detector_seconds_total", "counter",
             "CPU seconds spent in detector updates (divide by buckets closed for the mean).",
             stats.detect_seconds)
    w.metric("crisisd_series", "gauge", "Series (brand x channel) the windows track.",
             pipeline.windows.series_count)
    w.metric("crisisd_incidents_open", "gauge", "Incidents open or acknowledged.",
             len(pipeline.incidents.open))
    latest = pipeline.windows.max_event_time
    if math.isfinite(latest):
        w.metric("crisisd_event_lag_seconds", "gauge",
                 "Wall clock minus the newest event time seen.", now - latest)
    if stats.last_event_wall:
        w.metric("crisisd_last_event_age_seconds", "gauge",
                 "Seconds since the last batch of events arrived.", now - stats.last_event_wall)
    if pipeline.journal is not None:
        w.metric("crisisd_journal_bytes", "gauge",
                 "Bytes of mentions journaled since the last snapshot (replayed after a crash).",
                 pipeline.journal.size)
    if snapshots is not None:
        w.metric("crisisd_snapshots_total", "counter",
                 "Detector snapshots attempted, by outcome (saved, failed).",
                 [({"outcome": "saved"}, snapshots.count),
                  ({"outcome": "failed"}, snapshots.failed)])
        if snapshots.count:
            w.metric("crisisd_snapshot_last_success_timestamp_seconds", "gauge",
                     "When the last detector snapshot reached the disk (Unix time).",
                     snapshots.last_at)
            w.metric("crisisd_snapshot_seconds", "gauge",
                     "How long the last detector snapshot took to write.", snapshots.last_seconds)
            w.metric("crisisd_snapshot_bytes", "gauge", "Size of the last detector snapshot.",
                     snapshots.last_bytes)
    if source is not None:
        w.metric("crisisd_mqtt_connected", "gauge", "1 while the broker connection is up.",
                 int(source.connected))
        w.metric("crisisd_mqtt_messages_received_total", "counter",
                 "MQTT messages received.", source.received)
        w.metric("crisisd_mqtt_backlog", "gauge",
                 "MQTT messages received and not yet processed.", source.backlog)
        w.metric("crisisd_mqtt_acked_early_total", "counter",
                 "MQTT messages acknowledged before being processed (past mqtt.max_unacked).",
                 source.acked_early)
        w.metric("crisisd_mqtt_connects_total", "counter",
                 "Successful broker connections (reconnects included).", source.connects)
    if response is not None:
        rows = response.store.db.execute(
            "SELECT target, medium, status, COUNT(*) FROM outbox GROUP BY target, medium, status"
            " ORDER BY target, medium, status"
        ).fetchall()
        w.metric("crisisd_actions", "gauge",
                 "Actions in the outbox by target, medium and outcome (pending, sending, "
                 "delivered, failed, unknown, cancelled).",
                 [({"target": t, "medium": m, "outcome": s}, n) for t, m, s, n in rows])
        w.metric("crisisd_outbox_backlog", "gauge", "Actions pending or being sent.",
                 outbox_backlog(response))
        silenced = response.store.db.execute(
            "SELECT COALESCE(SUM(suppressed), 0) FROM silences").fetchone()[0]
        w.metric("crisisd_anomalies_silenced_total", "counter",
                 "Anomalies suppressed by silences.", silenced)
    lines = w.lines
    if latency is not None:
        lines += [
            "# HELP crisisd_delivery_results_total Delivery attempts' final results since start.",
            "# TYPE crisisd_delivery_results_total counter",
        ]
        for (target, outcome), n in sorted(latency.outcomes.items()):
            lines.append(f'crisisd_delivery_results_total{{target="{_label(target)}",'
                         f'outcome="{_label(outcome)}"}} {n}')
        lines += latency.lines("crisisd_delivery_latency_seconds")
    return "\n".join(lines) + "\n"


def outbox_backlog(response: Response) -> int:
    """Actions not yet delivered nor given up on (pending or sending)."""
    row = response.store.db.execute(
        "SELECT COUNT(*) FROM outbox WHERE status IN ('pending', 'sending')"
    ).fetchone()
    return int(row[0])
