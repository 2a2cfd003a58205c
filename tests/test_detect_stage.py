"""The detect stage: a tick of many series through one bank per signal and cadence."""

from __future__ import annotations

import datetime as dt
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import structlog.testing

from daemon import snapshots
from daemon.config import DetectionConfig
from daemon.detect import DetectStage
from daemon.domain import Bucket, SeriesKey
from daemon.templating import span
from daemon.timeline import describe
from daemon.windows import Windows
from detectors import registry
from detectors.terms import TermDetector
from detectors.volume import SeasonalCountDetector

DAY = 86400.0
T0 = 1_700_006_400.0
B = 300.0


def cfg() -> DetectionConfig:
    return DetectionConfig(warmup=DAY / 2)


def bucket(key: SeriesKey, start: float, length: float, volume: int, negative: int,
           aggregated: bool = False) -> Bucket:
    b = Bucket(key, start, start + length, volume=volume, negative=negative,
               aggregated=aggregated, negative_known=not aggregated)
    if not aggregated:
        b.sentiment_n = volume
        b.sentiment_sum = 0.1 * volume - 0.6 * negative
        b.terms = Counter({"coffee": volume // 2, "order": volume // 3})
    return b


def counts(n_ticks: int, seed: int, storm_at: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = ((T0 + B * np.arange(n_ticks)) % DAY) / 3600.0
    lam = 40.0 * (1.0 + 0.6 * np.sin(2 * np.pi * (h - 9.0) / 24.0)) + 2.0
    x = rng.poisson(lam)
    if storm_at is not None:
        x[storm_at:storm_at + 6] *= 8
    return x


class Sink:
    """The score sink: every (series, signal) score in order."""

    def __init__(self) -> None:
        self.scores: dict[tuple[SeriesKey, str], list[float]] = {}

    def __call__(self, series, signal, bucket, value, score, alert) -> None:
        self.scores.setdefault((series, signal), []).append(score)


A = SeriesKey("acme", "twitter")
N = SeriesKey("northwind", "twitter")
M = SeriesKey("metrics", "")  # an upstream aggregate at its own 15-minute cadence


def run(stage: DetectStage, keys: list[SeriesKey], ticks: range, x: dict[SeriesKey, np.ndarray],
        start_of: dict[SeriesKey, int] | None = None) -> list:
    found = []
    for k in ticks:
        t = T0 + B * k
        buckets = [bucket(key, t, B, int(x[key][k]), int(x[key][k]) // 6)
                   for key in keys if k >= (start_of or {}).get(key, 0)]
        if k % 3 == 0:
            buckets.append(bucket(M, t, 3 * B, int(x[M][k // 3]), 0, aggregated=True))
        anomalies, _ = stage.process(buckets)
        found.extend((a.series, a.signal, a.start) for a in anomalies)
    return found


def test_a_series_scores_the_same_whoever_shares_its_banks_and_ticks():
    n = int(2 * DAY / B)
    x = {A: counts(n, 1, storm_at=int(1.5 * DAY / B)), N: counts(n, 2), M: counts(n, 3)}
    alone, crowd = Sink(), Sink()
    found_alone = run(DetectStage(cfg(), on_score=alone), [A], range(n), x)
    # northwind joins half a day in; the aggregate series has its own cadence and signals
    found = run(DetectStage(cfg(), on_score=crowd), [N, A], range(n), x,
                start_of={N: int(DAY / 2 / B)})
    for signal in ("volume", "negative_share", "negative_volume", "sentiment", "reach"):
        assert crowd.scores[(A, signal)] == alone.scores[(A, signal)], signal
    assert [f for f in found if f[0] == A] == found_alone
    assert any(f[1] == "volume" for f in found_alone)  # the storm was caught
    # the aggregate series carries volume only, at its own cadence
    assert {s for (key, s) in crowd.scores if key == M} == {"volume"}
    assert len(crowd.scores[(M, "volume")]) == len(range(0, n, 3))


def test_a_snapshot_restores_every_bank_warm(tmp_path: Path):
    n = int(2 * DAY / B)
    x = {A: counts(n, 4, storm_at=int(1.7 * DAY / B)), N: counts(n, 5), M: counts(n, 6)}
    half = int(1.2 * DAY / B)
    straight = DetectStage(cfg())
    run(straight, [A, N], range(half), x)
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, straight, Windows(60.0, 0.0, str.split))
    restored = DetectStage(cfg())
    assert snapshots.load(path, restored, Windows(60.0, 0.0, str.split))
    assert restored.series_count == straight.series_count == 3
    after_straight = run(straight, [A, N], range(half, n), x)
    after_restored = run(restored, [A, N], range(half, n), x)
    assert after_restored == after_straight
    assert any(f[0] == A for f in after_straight)


def test_a_restart_takes_the_new_settings_and_keeps_what_was_learnt(tmp_path: Path):
    """Sensitivity, warm-up, the floor and the lexicon changed between two runs apply
    to the restored detectors; the baselines learnt before are kept."""
    n = int(DAY / B)
    x = {A: counts(n, 4), N: counts(n, 5), M: counts(n, 6)}
    before = DetectStage(cfg())
    run(before, [A, N], range(n), x)
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, before, Windows(60.0, 0.0, str.split))
    lexicon = tmp_path / "lexicon.yaml"
    lexicon.write_text("safety:\n  - exploding kettle\n")
    changed = DetectionConfig(warmup=DAY, sensitivity="fewer", min_volume=50, lexicon=lexicon)
    after = DetectStage(changed)
    assert snapshots.load(path, after, Windows(60.0, 0.0, str.split))
    cad, old = after.cadences[B], before.cadences[B]
    assert cad.terms.lexicon.category == {"exploding kettle": "safety"}
    assert cad.banks["negative_share"].min_volume == 50
    assert cad.banks["volume"].warmup == DAY
    # the holds start at the threshold of "fewer" now
    assert cad.banks["volume"].hold.surprise > old.banks["volume"].hold.surprise
    t = T0 + B * n
    for signal, bank in cad.banks.items():
        assert bank.size == old.banks[signal].size
        assert bank.band(t, 1e-3).expected == old.banks[signal].band(t, 1e-3).expected, signal
    assert cad.terms.n_terms(0) == old.terms.n_terms(0) > 0


def test_a_banks_schema_tells_a_changed_detector_from_its_own_snapshot():
    bank = registry.make("volume", bucket=B, warmup=DAY, min_volume=20)
    bank.add()
    same = pickle.loads(pickle.dumps(bank))
    assert same.schema() == bank.schema()
    del same.__dict__["state_version"]  # pickled before versions were kept: version 1
    assert same.schema() == bank.schema()
    knots = SeasonalCountDetector(bucket=B, falls=True, slots=48)  # another profile
    knots.add()
    assert knots.schema() != bank.schema()
    terms = TermDetector(bucket=B)
    terms.add()
    before = pickle.loads(pickle.dumps(terms))
    del before.__dict__["_landmark"]  # saved by code that did not learn it yet
    assert before.schema() != terms.schema()


def test_a_detector_an_upgrade_changed_starts_cold_alone(tmp_path: Path, monkeypatch,
                                                         capsys):
    n = int(DAY / B)
    x = {A: counts(n + 30, 4, storm_at=n + 10), N: counts(n + 30, 5), M: counts(n + 30, 6)}
    before = DetectStage(cfg())
    run(before, [A, N], range(n), x)
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, before, Windows(60.0, 0.0, str.split))
    monkeypatch.setattr(SeasonalCountDetector, "VERSION", 2)  # its state means other things now
    after = DetectStage(cfg())
    assert snapshots.load(path, after, Windows(60.0, 0.0, str.split))
    assert "volume@300s" in capsys.readouterr().out
    cad = after.cadences[B]
    counts_ = ("volume", "negative_volume")
    for signal, bank in cad.banks.items():
        slots = np.arange(bank.size)
        assert bank.size == before.cadences[B].banks[signal].size
        assert bank.is_warm(slots).any() != (signal in counts_), signal
    went_on, resumed = Sink(), Sink()
    before.on_score, after.on_score = went_on, resumed
    assert any(s == "volume" for (_, s, _) in run(before, [A, N], range(n, n + 30), x))
    assert run(after, [A, N], range(n, n + 30), x) == []  # warming up, not misreading
    for (key, signal), scores in resumed.scores.items():
        if signal in counts_:
            assert not any(scores)
        else:  # the other signals go on as if there had been no upgrade
            assert scores == went_on.scores[(key, signal)], signal


def test_a_signal_enabled_after_a_snapshot_joins_the_series_it_holds(tmp_path: Path):
    n = int(DAY / B)
    x = {A: counts(n + 3, 4), N: counts(n + 3, 5), M: counts(n + 3, 6)}
    before = DetectStage(DetectionConfig(warmup=DAY / 2, signals=["volume", "terms"]))
    run(before, [A, N], range(n), x)
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, before, Windows(60.0, 0.0, str.split))
    after = DetectStage(DetectionConfig(warmup=DAY / 2, signals=["volume", "sentiment"]))
    assert snapshots.load(path, after, Windows(60.0, 0.0, str.split))
    sink = Sink()
    after.on_score = sink
    run(after, [A, N], range(n, n + 3), x)
    cad = after.cadences[B]
    assert cad.terms is None and set(cad.banks) == {"volume", "sentiment"}
    assert cad.series[A].term_slot is None
    assert len(sink.scores[(A, "sentiment")]) == 3  # watched from the next bucket on
    assert cad.banks["volume"].is_warm(np.arange(cad.banks["volume"].size)).all()
    assert not cad.banks["sentiment"].is_warm(np.arange(cad.banks["sentiment"].size)).any()


def test_the_series_watched_say_which_signals_are_warm_and_what_is_normal_now():
    n = int(0.7 * DAY / B)
    x = {A: counts(n, 4), N: counts(n, 5), M: counts(n, 6)}
    stage = DetectStage(cfg())
    run(stage, [A, N], range(n), x, start_of={N: n - 12})  # northwind joined an hour ago
    t = T0 + B * n
    rows = {r["series"]: r for r in stage.watched(t)}
    assert set(rows) == {"acme/twitter", "northwind/twitter", "metrics"}
    acme, north = rows["acme/twitter"]["signals"], rows["northwind/twitter"]["signals"]
    assert all(d["warm"] for d in acme.values()) and not any(d["warm"] for d in north.values())
    volume = acme["volume"]
    assert volume["low"] <= volume["expected"] <= volume["high"]
    band = stage.cadences[B].banks["volume"].band(t, 1e-3, 0)  # the alert threshold's band
    assert volume["expected"] == round(band.expected, 4) and volume["high"] == round(band.high, 4)
    assert acme["terms"]["kept"] == 2  # coffee, order
    assert set(rows["metrics"]["signals"]) == {"volume"} and rows["metrics"]["bucket"] == 3 * B
    assert [r["series"] for r in stage.watched(t, brand="north*")] == ["northwind/twitter"]


def test_a_watched_brand_stays_elevated_while_its_storm_goes_on():
    n = int(1.5 * DAY / B)
    storm = n - 20
    x = {A: counts(n, 7), N: counts(n, 8), M: counts(n, 9)}
    x[A][storm:] *= 6
    stage = DetectStage(cfg())
    run(stage, [A, N], range(storm + 5), x)  # the storm broke five buckets ago
    t = T0 + B * (storm + 5)
    buckets = [bucket(A, t, B, int(x[A][storm + 5]), 3), bucket(N, t, B, int(x[N][storm + 5]), 3)]
    anomalies, elevated = stage.process(buckets, watched=lambda brand: True)
    assert not anomalies  # one alert per excursion: no new page...
    assert elevated == {"acme"}  # ...but acme is still outside its band, northwind is not


def test_a_turn_caught_by_a_pooled_window_is_explained_by_that_window():
    """The anomaly shows the half hour's share against the band of as many mentions.

    Each bucket of the turn is unremarkable alone (a few more negatives of
    forty); only the window says what happened, so the explanation is the
    window's, and the timeline names it.
    """
    rng = np.random.default_rng(12)
    stage = DetectStage(cfg())
    turn, found = int(1.6 * DAY / B), []
    for k in range(turn + 36):
        volume = int(rng.poisson(40))
        q = 0.15 if k < turn else 0.3
        negative = int(rng.binomial(volume, q))
        anomalies, _ = stage.process([bucket(A, T0 + B * k, B, volume, negative)])
        found.extend(a for a in anomalies if a.signal == "negative_share")
    assert found, "the turn was not caught"
    first = found[0]
    assert first.window > 0.0
    assert first.observed > first.high > first.expected
    assert f"negative_share over the last {span(first.window)}: " in describe(first)


def elevated_through_a_turn(seed: int, mentions: int, buckets: int, after: int
                            ) -> tuple[int, int, dict[int, bool]]:
    """Acme's negative share at 15 %, then 60 % for ``buckets`` buckets from its
    second afternoon, ``mentions`` a bucket: (start, end, whether the brand was
    elevated at each bucket, up to ``after`` buckets past the end)."""
    rng = np.random.default_rng(seed)
    stage = DetectStage(cfg())
    start = int(1.6 * DAY / B)
    end = start + buckets
    status = {}
    for k in range(end + after):
        q = 0.6 if start <= k < end else 0.15
        negative = int(rng.binomial(mentions, q))
        _, elevated = stage.process([bucket(A, T0 + B * k, B, mentions, negative)],
                                    watched=lambda brand: True)
        status[k] = "acme" in elevated
    return start, end, status


def test_a_small_brands_turn_stays_elevated_through_its_half_hour_window():
    """Buckets of ten mentions are under the floor (20): alone they can neither
    alert nor keep an incident open. The half-hour window has enough: the
    brand is elevated while the turn goes on, and not once it has passed."""
    turn, end, status = elevated_through_a_turn(4, mentions=10, buckets=36, after=12)
    assert not any(status[k] for k in range(int(DAY / B), turn))
    assert all(status[k] for k in range(turn + 6, end))  # three hours of the turn, all of it
    assert not any(status[k] for k in range(end + 8, end + 12))  # the window has moved on


def test_a_brand_of_a_mention_a_bucket_stays_elevated_through_its_slow_burn():
    """One mention a bucket: the half hour (six) is under the floor too, and is
    typically so. The three hours are all this brand has, so they say whether
    its burn goes on (at a bigger brand they lag and do not answer): the brand
    stays elevated while the burn lasts, and not once the window has moved on."""
    burn, end, status = elevated_through_a_turn(5, mentions=1, buckets=72, after=48)
    assert not any(status[k] for k in range(int(DAY / B), burn))
    assert all(status[k] for k in range(burn + 24, end))  # from two hours in, to its end
    assert not any(status[k] for k in range(end + 40, end + 48))  # three hours on, over


def normal_counts(days: int, series: int, length: float, seed: int) -> np.ndarray:
    """(buckets, series) over-dispersed daily-seasonal counts, with retweet bursts."""
    rng = np.random.default_rng(seed)
    n = int(days * DAY / B)
    h = ((T0 + B * np.arange(n)) % DAY) / 3600.0
    base = rng.uniform(5.0, 60.0, series)
    lam = base * (1.0 + 0.6 * np.sin(2 * np.pi * (h - 9.0) / 24.0))[:, None]
    lam = lam * rng.gamma(10.0, 0.1, lam.shape) + base * rng.pareto(2.5, lam.shape) * (
        rng.random(lam.shape) < 0.01)
    x = rng.poisson(lam)
    per = round(length / B)  # five-minute counts summed to the bucket
    return x[: n - n % per].reshape(-1, per, series).sum(axis=1)


def volume_alerts(x: np.ndarray, length: float) -> list[int]:
    """The bucket index of every volume alert of an upstream feed of (buckets, series)
    counts at ``length``-second buckets."""
    stage = DetectStage(DetectionConfig(warmup=DAY, signals=["volume"]))
    keys = [SeriesKey(f"brand{i}", "twitter") for i in range(x.shape[1])]
    found = []
    for k in range(len(x)):
        t = T0 + length * k
        anomalies, _ = stage.process([bucket(key, t, length, int(x[k, i]), 0, aggregated=True)
                                      for i, key in enumerate(keys)])
        found += [k] * len(anomalies)
    return found


def alerts_a_day(x: np.ndarray, length: float, skip_days: float = 6.0) -> float:
    """Volume alerts per series-day of an upstream feed, after ``skip_days``."""
    first = int(skip_days * DAY / length)
    count = sum(k >= first for k in volume_alerts(x, length))
    return count / (x.shape[1] * (len(x) * length / DAY - skip_days))


def test_a_preset_is_a_budget_in_time_at_any_bucket_of_counts():
    """Normal traffic fed hourly alerts about as often a day as fed every five minutes.

    The count detector's chances are five-minute periods; an hourly bucket
    spends twelve periods' budget. At the preset's per-bucket threshold the
    hourly feed never alerted (0 in 960 series-days), so nor did a crisis
    short of twice anything in its last five days.
    """
    fine = alerts_a_day(normal_counts(46, 24, B, seed=3), B)
    hourly = alerts_a_day(normal_counts(46, 24, 3600.0, seed=3), 3600.0)
    assert 0.02 < fine < 0.3
    assert fine / 8 < hourly <= fine


def test_an_hourly_surge_past_its_five_day_record_alerts():
    x = normal_counts(12, 1, 3600.0, seed=4)[:, 0].copy()
    at = len(x) - 10
    x[at] = int(1.6 * x[at - 120:at].max())  # 1.6 times the busiest hour of five days
    found = volume_alerts(x[: at + 1, None], 3600.0)
    assert found and found[-1] == at


def storm_alerts(sensitivity: str, seed: int) -> list[tuple[int, str]]:
    """(buckets into the storm, severity) of each volume alert of a night storm that climbs
    to six times its hour's volume over four hours and stays there two more."""
    rng = np.random.default_rng(seed)
    n = int(4 * DAY / B)
    h = ((T0 + B * np.arange(n)) % DAY) / 3600.0
    lam = 40.0 * (1.0 + 0.6 * np.sin(2 * np.pi * (h - 9.0) / 24.0)) + 2.0
    at = int(3 * DAY / B) + 36  # 03:00
    lam[at:at + 48] *= np.linspace(1.0, 6.0, 48)
    lam[at + 48:at + 72] *= 6.0
    x = rng.poisson(lam)
    stage = DetectStage(DetectionConfig(warmup=DAY, signals=["volume"],
                                        sensitivity=sensitivity))
    found = []
    for k in range(at + 72):
        anomalies, _ = stage.process([bucket(A, T0 + B * k, B, int(x[k]), 0, aggregated=True)])
        found += [(k - at, a.severity.name.lower()) for a in anomalies]
    return found


def test_every_preset_holds_a_storm_from_its_own_threshold():
    """A climbing storm alerts once per severity tier, whatever the preset.

    The hold began at balanced's tail probability for every preset: at
    ``more`` each bucket of a storm between the two thresholds alerted anew
    (30 alerts in this storm).
    """
    for seed in range(2):
        for sensitivity in ("balanced", "more"):
            found = storm_alerts(sensitivity, seed)
            assert [s for _, s in found] == ["low", "high"], (sensitivity, found)
        assert storm_alerts("more", seed)[0][0] < storm_alerts("balanced", seed)[0][0]


def test_a_cold_start_of_many_series_logs_a_line_per_tick_not_per_series():
    keys = [SeriesKey(f"brand{i:02d}", "twitter") for i in range(12)]
    stage = DetectStage(DetectionConfig(warmup=2 * B, signals=["volume", "sentiment"]))
    with structlog.testing.capture_logs() as logs:
        for k in range(4):
            stage.process([bucket(key, T0 + B * k, B, 20, 2) for key in keys])
        stage.process([bucket(key, T0 + B * 4, B, 20, 2) for key in keys[:3]]
                      + [bucket(SeriesKey("latecomer", "x"), T0 + B * 4, B, 20, 2)])
    warming = [e for e in logs if e["event"] == "detectors warming up"]
    assert [(e["series_count"], len(e["series"])) for e in warming[:1]] == [(12, 5)]
    assert warming[0]["series"][0] == "brand00/twitter"
    assert warming[0]["signals"] == ["sentiment", "volume"]
    assert warming[1:] == [{"event": "detectors warming up", "log_level": "info",
                            "series": ["latecomer/x"], "signals": warming[0]["signals"],
                            "warmup_s": 2 * B}]  # a few series: each named, no count
    ready = [e for e in logs if e["event"] == "baseline ready" and e["signal"] == "volume"]
    assert [e["series_count"] for e in ready] == [12]  # every series at once


def test_the_holidays_of_the_configuration_reach_the_counts_also_after_a_restart(tmp_path: Path):
    christmas, thanksgiving = dt.date(2026, 12, 25), dt.date(2026, 11, 26)
    at = {d: (d - dt.date(1970, 1, 1)).days * DAY + 3600.0 for d in (christmas, thanksgiving)}
    before = DetectStage(DetectionConfig(warmup=DAY / 2,
                                         holidays_by_brand={"acme*": [thanksgiving]}))
    run(before, [A, N], range(3), {A: counts(3, 4), N: counts(3, 5), M: counts(3, 6)})
    slots = np.arange(2)  # acme's, northwind's
    for signal in ("volume", "negative_volume"):
        bank = before.cadences[B].banks[signal]
        assert bank._on_holiday(at[thanksgiving], slots).tolist() == [True, False]
        assert bank._on_holiday(at[christmas], slots) is False
    path = tmp_path / "detectors.snapshot"
    snapshots.save(path, before, Windows(60.0, 0.0, str.split))
    after = DetectStage(DetectionConfig(warmup=DAY / 2, holidays=[christmas]))
    assert snapshots.load(path, after, Windows(60.0, 0.0, str.split))
    for signal in ("volume", "negative_volume"):  # acme's own are gone, everyone's apply
        bank = after.cadences[B].banks[signal]
        assert bank._on_holiday(at[thanksgiving], slots) is False
        assert bank._on_holiday(at[christmas], slots) is True
    assert after.cadences[B].banks["volume"].n[:2].tolist() == [3.0, 3.0]  # resumed warm
