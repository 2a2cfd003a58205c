"""Replay through the whole pipeline: the demo week, bad lines, CSV scores."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import random
import time
from pathlib import Path

import pytest
import structlog.testing
from servers import target_config
from servers.http import HttpStub

from daemon import backtest, cli, config, demo
from daemon.domain import IncidentChange
from daemon.sources.replay import ReplayError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo_week(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "week.jsonl"
    demo.write(path)
    return path


@pytest.fixture(scope="module")
def demo_result(demo_week, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")  # the reports, not in the working directory
    return asyncio.run(backtest.replay([demo_week], config.Config(state_dir=state)))


def test_demo_week_opens_one_incident_at_the_crisis(demo_result):
    [opened] = demo_result.opened
    incident = opened.incident
    assert incident.brand == demo.BRAND
    assert str(incident.origin) == "northwind/twitter"
    assert demo.CRISIS_AT <= opened.at <= demo.CRISIS_AT + 15 * 60
    terms = {t for t, _ in opened.anomaly.top_terms}
    assert {"kettle", "recall"} <= terms
    assert opened.anomaly.samples and opened.anomaly.tone == "negative"


def test_demo_incident_lasts_the_storm_then_resolves(demo_result):
    [resolved] = [e for e in demo_result.events if e.change == IncidentChange.RESOLVED]
    assert resolved.at >= demo.CRISIS_AT + 3 * 3600
    # ...and not its echo: kept open by where the signals are now (the bucket, the
    # last half hour), not by a three-hour level that lags the storm (it did: 12.5 h)
    assert resolved.at <= demo.CRISIS_AT + 12 * 3600
    assert demo_result.invalid.total() == 0 and demo_result.stats.late == 0


async def test_a_replay_reaches_only_the_test_targets(demo_week, tmp_path, monkeypatch):
    """A backtest of last month's mentions pages nobody: only ``test: true`` targets receive."""
    pager = await HttpStub().start()
    try:
        shipped = config.load(REPO / "config.yaml")
        monkeypatch.setenv("CRISISD_TARGET_PAGER_SECRET", "routing-key-of-a-test")
        targets = {**shipped.targets, "pager": target_config(type="pagerduty", url=pager.url)}
        cfg = shipped.model_copy(update={"targets": targets, "state_dir": tmp_path})
        result = await backtest.replay([demo_week], cfg)
    finally:
        await pager.stop()
    [opened] = result.opened
    pages = [e for e in opened.incident.timeline if e.kind == "page"]
    assert pages  # the playbook paged, as the daemon would have...
    assert not pager.requests  # ...but a replay reaches no real pager
    docs = [json.loads(f.read_text()) for f in (tmp_path / "outbox").glob("*.json")]
    assert any(d["medium"] == "page" for d in docs)  # the test target had them, marked
    assert all(d["test"] for d in docs)


def test_a_replay_leaves_the_daemons_state_dir_alone(demo_week, tmp_path):
    """A backtest of days the daemon saw live opens incidents with the same ids: its
    reports must not overwrite the real ones (they went to legal), nor land beside them."""
    live, kept = tmp_path / "live", tmp_path / "kept"
    cfg = (REPO / "config.yaml").read_text().replace("state_dir: state", f"state_dir: {live}")
    cfg = cfg.replace("  dir: playbooks", f"  dir: {REPO / 'playbooks'}")
    (tmp_path / "config.yaml").write_text(cfg)
    report = live / "reports" / "northwind-20260307-1407.html"
    report.parent.mkdir(parents=True)
    report.write_text("the report the live daemon sent to legal")
    args = ["replay", str(demo_week), "-c", str(tmp_path / "config.yaml"), "--keep", str(kept)]
    assert cli.main(args) == 0
    assert report.read_text() == "the report the live daemon sent to legal"
    assert sorted(p.name for p in live.rglob("*")) == ["northwind-20260307-1407.html",
                                                       "reports"]
    assert (kept / "reports" / report.name).is_file()  # --keep: the backtest's own report


def test_bad_lines_are_counted_and_good_ones_kept(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = {"id": "1", "ts": "2026-01-01T00:00:00Z", "text": "hi", "brand": "b", "channel": "c"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "2", "sentiment": 3}),
        json.dumps({**good, "id": "3", "ts": "yesterday"}),
        json.dumps({k: v for k, v in good.items() if k != "text"}),
        json.dumps({**good, "id": "4", "ts": 1767225650}),
    ]
    path.write_text("\n".join(lines) + "\n")
    result = asyncio.run(backtest.replay([path], config.Config(state_dir=tmp_path)))
    assert result.stats.mentions == 2
    assert result.invalid == {"bad_json": 1, "out_of_range": 1, "bad_timestamp": 1,
                              "missing_field": 1}


def test_csv_replay_writes_nab_layout_scores(tmp_path):
    data = tmp_path / "Series_A.csv"
    start = 1424986973  # 2015-02-26 21:42:53 UTC
    rows = [(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + 300 * i)), 10 + i % 7)
            for i in range(600)]
    data.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    out = tmp_path / "out"
    assert cli.main(["replay", str(data), "--scores", str(out)]) == 0
    with (out / "volume" / "Series_A.csv").open() as fh:
        got = list(csv.reader(fh))
    assert got[0] == ["timestamp", "value", "anomaly_score", "alert"]
    assert [r[0] for r in got[1:]] == [t for t, _ in rows]
    assert all(0.0 <= float(r[2]) <= 1.0 and r[3] in ("0", "1") for r in got[1:])
    assert sorted(p.name for p in out.iterdir()) == ["volume"]


def test_csv_scores_line_up_row_for_row_despite_gaps_jitter_and_repeats(tmp_path):
    """NAB's scorer needs one score row per data row: a sensor's file has gaps,
    rows off its grid and repeated timestamps (NAB's traffic and ad-exchange files)."""
    data = tmp_path / "Series_C.csv"
    start = 1424986973
    stamps = [start + 300 * i for i in range(600) if i % 50 != 7]  # a row missing now and then
    stamps[100] += 170  # rows off the grid: the next bucket's, not the last's
    stamps[300] -= 40
    stamps.insert(520, stamps[520])  # a repeated timestamp ...
    values = [10 + i % 7 for i in range(len(stamps))]
    values[520] = values[521] = 400  # ... on a spike: one alert, on its first row
    rows = [(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)), v)
            for t, v in zip(stamps, values, strict=True)]
    data.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    out = tmp_path / "out"
    assert cli.main(["replay", str(data), "--scores", str(out)]) == 0
    with (out / "volume" / "Series_C.csv").open() as fh:
        got = list(csv.reader(fh))[1:]
    assert [r[0] for r in got] == [t for t, _ in rows]
    assert [r[1] for r in got[520:522]] == ["400", "400"]
    assert [r[3] for r in got[519:523]] == ["0", "1", "0", "0"]
    assert [got[i][1] for i in (99, 100, 299, 300)] == [str(values[i]) for i in (99, 100, 299, 300)]
    # (each row off the grid in a bucket of its own, not added to its neighbour's)


def test_csv_rows_out_of_time_order_are_replayed_in_time_order(tmp_path):
    """A batch is 1,000 events: merged as it stood, a row more than a batch
    out of place met a closed bucket and was dropped as late."""
    data = tmp_path / "Series_D.csv"
    stamps = [1424986973 + 300 * i for i in range(1500)]
    order = list(range(1500))
    order.insert(1200, order.pop(100))
    data.write_text("timestamp,value\n" + "".join(
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(stamps[i]))},5\n" for i in order))
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(backtest.replay([data], config.Config(state_dir=tmp_path)))
    assert (result.stats.metrics, result.stats.late) == (1500, 0)
    assert [e["event"] for e in logs].count("replay_rows_sorted") == 1


def test_bad_csv_rows_are_counted_and_skipped_fractions_scaled(tmp_path):
    data = tmp_path / "Series_B.csv"
    data.write_text(
        "timestamp,value\n"
        "2015-02-26 21:40:00,3\n"
        "2015-02-26 21:45:00,abc\n"  # not a number
        "yesterday,4\n"  # not a timestamp
        "2015-02-26 21:55:00,nan\n"  # not a count
        "2015-02-26 22:00:00\n"  # no value
        "2015-02-26 22:05:00,2.6\n"  # not a whole count: the file replays in thousandths
        "2015-02-26 22:10:00,-2\n"  # kept as 0, and said so
        "2015-02-26 22:15:00,5\n"
    )
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(backtest.replay([data], config.Config(state_dir=tmp_path)))
    assert result.invalid == {"wrong_type": 1, "bad_timestamp": 1, "out_of_range": 1,
                              "missing_field": 1}
    assert result.stats.metrics == 4  # every bucket with a number is kept
    details = [e.get("detail") for e in logs if e["event"] == "payload_rejected"]
    assert "Series_B.csv:3: 'abc' is not a number" in details
    (scaled,) = [e for e in logs if e["event"] == "replay_values_scaled"]
    assert scaled["unit"] == 0.001  # the median of 3, 2.6 and 5 at 1,000 to 9,999
    (clipped,) = [e for e in logs if e["event"] == "replay_values_clipped"]
    assert (clipped["line"], clipped["value"]) == (8, -2.0)


def test_a_measurement_replays_in_its_own_unit_and_its_spike_alerts(tmp_path):
    """A cost per click of about 0.1 (NAB's ad-exchange files): rounded to whole
    counts it was all zeros and nothing could alert; the score file shows the
    file's own values."""
    rng = random.Random(5)
    data = tmp_path / "cpc.csv"
    start = 1309478401  # 2011-07-01 00:00:01 UTC, hourly rows
    values = [round(0.1 * (1.0 + 0.3 * math.sin(2 * math.pi * i / 24)) * rng.lognormvariate(0, 0.1),
                    6) for i in range(24 * 21)]
    values[24 * 18 + 5] = 0.45  # a night's price four times the day's
    data.write_text("timestamp,value\n" + "".join(
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(start + 3600 * i))},{v}\n"
        for i, v in enumerate(values)))
    out = tmp_path / "out"
    assert cli.main(["replay", str(data), "--scores", str(out)]) == 0
    with (out / "volume" / "cpc.csv").open() as fh:
        got = list(csv.reader(fh))[1:]
    assert [i for i, r in enumerate(got) if r[3] == "1"] == [24 * 18 + 5]
    assert [float(r[1]) for r in got[:3]] == pytest.approx(values[:3], abs=1e-5)


def test_the_feed_coming_back_after_an_outage_opens_no_incident(tmp_path):
    """Eight hours without a single mention (the feed was down), then the usual traffic.

    The empty buckets close as volume 0, as silence does; the count detectors
    take a silence they find impossible for a gap in the feed, so the feed's
    return is not a volume storm on every series. The silence itself is a
    fall of volume: reported, and no crisis.
    """
    down = (demo.START + 8 * demo.DAY + 10 * 3600, demo.START + 8 * demo.DAY + 18 * 3600)
    path = tmp_path / "outage.jsonl"
    with path.open("w") as fh:
        for m in demo.mentions(seed=5, days=10, storm=None, traffic=demo.Traffic(peak=10.0)):
            if not down[0] <= m["ts"] < down[1]:
                fh.write(json.dumps(m) + "\n")
    cfg = config.load(REPO / "config.yaml").model_copy(update={"state_dir": tmp_path})
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(backtest.replay([path], cfg))
    assert result.stats.buckets >= 2 * (10 * 1440 - 5)  # the empty hours closed too
    # the operator hears of the silence: the hour's count against its expectation
    fell = [e for e in logs if e["log_level"] == "warning" and "feed down" in e["event"]]
    assert fell, [e["event"] for e in logs if e["log_level"] == "warning"]
    assert all(e["seconds"] == 3600 and e["observed"] < e["expected"] / 2 for e in fell), fell
    counts = {(signal, way) for signal, _, way in result.stats.anomalies if "volume" in signal}
    assert counts == {("volume", "down")}, result.stats.anomalies  # a critical storm, once
    assert result.opened == []


def test_a_csv_named_brand_at_channel_is_that_series_and_one_without_reads_well(tmp_path):
    """``acme@twitter.csv`` is brand acme on twitter, as its score file is named,
    so a backtest of exported counts matches and posts by channel; a file of no
    channel pages "crisis: ...", not "crisis on : ..."."""
    start = 1424986973
    for name in ("acme@twitter", "Series_E"):
        values = [10 + i % 7 for i in range(1500)]
        values[1400] = 400
        (tmp_path / f"{name}.csv").write_text("timestamp,value\n" + "".join(
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(start + 300 * i))},{v}\n"
            for i, v in enumerate(values)))
    cfg = config.load(REPO / "config.yaml").model_copy(update={"state_dir": tmp_path / "state"})
    cfg = cfg.model_copy(update={"playbooks": cfg.playbooks.model_copy(
        update={"dir": REPO / "playbooks"})})
    said: list[str] = []
    result = asyncio.run(backtest.replay(
        sorted(tmp_path.glob("*.csv")), cfg, scores=tmp_path / "out",
        on_entry=lambda incident, entry: said.append(entry.message)))
    assert sorted(str(e.incident.origin) for e in result.opened) == ["Series_E", "acme/twitter"]
    assert sorted(p.name for p in (tmp_path / "out" / "volume").iterdir()) == [
        "Series_E.csv", "acme@twitter.csv"]
    pages = [m for m in said if m.startswith("page to")]
    assert any("acme crisis on twitter: " in m for m in pages), pages
    assert any("Series_E crisis: " in m for m in pages), pages
    assert not [m for m in said if " on :" in m or " for :" in m]


def test_a_csv_whose_name_is_no_series_is_refused_with_the_rule(tmp_path):
    for name in ("a@b@c.csv", "acme@.csv", "@twitter.csv", "acme#1.csv"):
        data = tmp_path / name
        data.write_text("timestamp,value\n2015-02-26 21:40:00,3\n")
        with pytest.raises(ReplayError, match=r"'brand@channel\.csv'"):
            asyncio.run(backtest.replay([data], config.Config(state_dir=tmp_path)))
