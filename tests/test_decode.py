"""The MQTT payload contract: every way a payload can be bad is counted under
its reason, and the valid mentions around it survive."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import mention
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from daemon import decode as decode_module
from daemon.decode import REASONS, Decoder
from daemon.domain import Mention, MetricPoint

T = "crisisd/mentions/acme/twitter"
M = "crisisd/metrics/acme/twitter"


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def consistent(d: Decoder) -> None:
    assert d.items == d.valid.total() + d.invalid.total()
    assert d.errors == 0
    assert set(d.invalid) <= set(REASONS)


def ids(events: list[Any]) -> list[str]:
    return [e.id for e in events]


def test_a_mention_object_becomes_a_mention_with_the_topic_series() -> None:
    d = Decoder()
    obj = mention(
        1, author="ann", followers=7, sentiment=-0.25, lang="en", url="https://a.example/1", extra=1
    )
    (m,) = d.decode(T, enc(obj))
    assert m == Mention(
        "m1",
        1_700_000_001.0,
        "acme",
        "twitter",
        "mention number 1",
        "ann",
        7,
        -0.25,
        "en",
        "https://a.example/1",
    )
    assert d.valid == {"mentions": 1} and not d.invalid
    consistent(d)


def test_optional_fields_default_and_sentiment_none_means_score_later() -> None:
    (m,) = Decoder().decode(T, b'{"id":"x","ts":5,"text":""}')
    assert (m.author, m.followers, m.sentiment, m.lang, m.url) == ("", 0, None, "", "")
    (m,) = Decoder().decode(T, b'{"id":"x","ts":5,"text":"t","sentiment":null}')
    assert m.sentiment is None


def test_a_batch_is_decoded_in_order() -> None:
    d = Decoder()
    events = d.decode(T, enc([mention(i) for i in range(100)]))
    assert ids(events) == [f"m{i}" for i in range(100)]
    assert d.decode(T, b"[]") == [] and d.decode(T, b" [ ] ") == []
    assert d.valid == {"mentions": 100}
    consistent(d)


BAD_ITEMS: list[tuple[str, Any]] = [
    ("not_object", 42),
    ("not_object", "text"),
    ("not_object", [[mention(0)]]),
    ("not_object", None),
    ("missing_field", {"ts": 1, "text": "no id"}),
    ("missing_field", {"id": "a", "text": "no ts"}),
    ("missing_field", {"id": "a", "ts": 1}),
    ("wrong_type", mention(0, id=5)),
    ("wrong_type", mention(0, text=["x"])),
    ("wrong_type", mention(0, author=None)),
    ("wrong_type", mention(0, followers="many")),
    ("wrong_type", mention(0, followers=10.5)),
    ("wrong_type", mention(0, followers=True)),
    ("wrong_type", mention(0, sentiment="bad")),
    ("wrong_type", mention(0, sentiment=False)),
    ("wrong_type", mention(0, lang=1)),
    ("out_of_range", mention(0, followers=-1)),
    ("out_of_range", mention(0, followers=2**64)),
    ("out_of_range", mention(0, sentiment=1.01)),
    ("out_of_range", mention(0, sentiment=-3)),
    ("bad_timestamp", mention(0, ts="yesterday")),
    ("bad_timestamp", mention(0, ts="2026-11-23T10:00:00")),  # no offset
    ("bad_timestamp", mention(0, ts="2026-11-23")),
    ("bad_timestamp", mention(0, ts="2026-13-01T00:00:00Z")),
    ("bad_timestamp", mention(0, ts=1_700_000_000_000)),  # epoch milliseconds
    ("bad_timestamp", mention(0, ts=-5)),
    ("bad_timestamp", mention(0, ts=True)),
    ("bad_timestamp", mention(0, ts=None)),
    ("bad_timestamp", mention(0, ts={"s": 1})),
]


@pytest.mark.parametrize(
    ("reason", "item"), BAD_ITEMS, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_ITEMS)]
)
def test_each_bad_item_is_counted_under_its_reason_and_neighbours_survive(
    reason: str, item: Any
) -> None:
    # alone, as a message of its own
    d = Decoder()
    assert d.decode(T, enc(item)) == []
    assert d.invalid == {reason: 1}
    # in the middle of a batch
    events = d.decode(T, enc([mention(1), item, mention(2)]))
    assert ids(events) == ["m1", "m2"]
    assert d.invalid == {reason: 2} and d.valid == {"mentions": 2}
    consistent(d)


def test_a_batch_with_many_kinds_of_bad_keeps_every_good_mention() -> None:
    d = Decoder()
    batch: list[Any] = []
    for i, (_, bad) in enumerate(BAD_ITEMS):
        batch += [mention(i), bad]
    events = d.decode(T, enc(batch))
    assert ids(events) == [f"m{i}" for i in range(len(BAD_ITEMS))]
    expected: dict[str, int] = {}
    for reason, _ in BAD_ITEMS:
        expected[reason] = expected.get(reason, 0) + 1
    assert d.invalid == expected
    consistent(d)


def test_whole_payload_rejections() -> None:
    d = Decoder(max_payload=1000)
    good = enc(mention(1))
    cases = [
        ("bad_json", T, b"{not json"),
        ("bad_json", T, b""),
        ("bad_json", T, good + b" trailing"),
        ("bad_json", T, b"[" + good),  # truncated batch
        ("bad_json", T, b'{"id":"\xff","ts":1,"text":"x"}'),  # invalid UTF-8
        ("too_large", T, enc(mention(1, text="x" * 1000))),
        ("bad_topic", "other/mentions/acme/twitter", good),
        ("bad_topic", "crisisd/posts/acme/twitter", good),
        ("bad_topic", "crisisd/mentions/acme", good),
        ("bad_topic", "crisisd/mentions/acme/twitter/extra", good),
        ("bad_topic", "crisisd/mentions//twitter", good),
        ("bad_topic", "crisisd/mentions/acme/", good),
        ("bad_topic", "crisisd/mentions/+/twitter", good),
        ("bad_topic", "crisisdx/mentions/acme/twitter", good),
    ]
    for reason, topic, payload in cases:
        before = d.invalid[reason]
        assert d.decode(topic, payload) == [], (reason, topic, payload)
        assert d.invalid[reason] == before + 1, (reason, topic, payload)
    consistent(d)
    assert d.items == len(cases)


def test_size_limit_is_inclusive_and_checked_before_parsing() -> None:
    payload = enc(mention(1))
    assert len(Decoder(max_payload=len(payload)).decode(T, payload)) == 1
    d = Decoder(max_payload=len(payload) - 1)
    assert d.decode(T, payload) == [] and d.invalid == {"too_large": 1}


def test_invalid_utf8_in_one_batch_item_spares_the_others() -> None:
    d = Decoder()
    payload = b"[" + enc(mention(1)) + b',{"id":"\xff","ts":1,"text":"x"},' + enc(mention(2)) + b"]"
    assert ids(d.decode(T, payload)) == ["m1", "m2"]
    assert d.invalid == {"bad_json": 1}
    consistent(d)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00.5Z", datetime(2026, 11, 23, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-23T11:30:00+01:30", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T05:00:00-05:00", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23t10:00:00z", datetime(2026, 11, 23, 10, tzinfo=UTC)),
        ("2026-11-23T10:00:00.123456789Z", datetime(2026, 11, 23, 10, 0, 0, 123457, tzinfo=UTC)),
        (1795428000, datetime(2026, 11, 23, 10, tzinfo=UTC)),
        (1795428000.25, datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
def test_timestamps(ts: Any, expected: datetime) -> None:
    (m,) = Decoder().decode(T, enc(mention(0, ts=ts)))
    assert m.ts == pytest.approx(expected.timestamp(), abs=1e-6)
    assert isinstance(m.ts, float)


def test_non_finite_numbers_are_rejected() -> None:
    d = Decoder()
    # JSON has no NaN; 1e999 overflows to infinity
    assert d.decode(T, b'{"id":"a","ts":1e999,"text":"x"}') == []
    assert d.decode(T, b'{"id":"a","ts":1,"text":"x","sentiment":-1e999}') == []
    assert d.decode(T, b'{"id":"a","ts":NaN,"text":"x"}') == []
    assert d.invalid == {"bad_timestamp": 1, "out_of_range": 1, "bad_json": 1}
    # replay records come from Python's json, which does produce NaN
    rec = {"brand": "b", "channel": "c"}
    assert d.decode_record({**mention(1), **rec, "ts": math.nan}) is None
    assert d.decode_record({**mention(1), **rec, "ts": math.inf}) is None
    assert d.decode_record({**mention(1), **rec, "sentiment": math.nan}) is None
    assert d.invalid == {"bad_timestamp": 3, "out_of_range": 2, "bad_json": 1}
    consistent(d)


def test_metrics() -> None:
    d = Decoder()
    events = d.decode(
        M,
        enc(
            [
                {"ts": 1_700_000_000, "volume": 40},
                {"ts": "2026-11-23T10:00:00Z", "volume": 40, "negative": 40, "sentiment": -0.2},
                {"ts": 1_700_000_000, "volume": 3, "negative": 4},
                {"ts": 1_700_000_000, "volume": -1},
                {"ts": 1_700_000_000, "volume": 1.5},
                {"ts": 1_700_000_000, "volume": True},
                {"ts": 1_700_000_000, "volume": 3, "negative": -1},
                {"ts": 1_700_000_000, "volume": 3, "sentiment": 2},
                {"ts": 1_700_000_000},
                {"volume": 3},
                {"ts": 1_700_000_000, "volume": 0, "text": "ignored"},
            ]
        ),
    )
    assert events == [
        MetricPoint(1_700_000_000.0, "acme", "twitter", 40),
        MetricPoint(1_795_428_000.0, "acme", "twitter", 40, 40, -0.2),
        MetricPoint(1_700_000_000.0, "acme", "twitter", 0),
    ]
    assert d.invalid == {"out_of_range": 4, "wrong_type": 2, "missing_field": 2}
    assert d.valid == {"metrics": 3}
    consistent(d)


def test_a_prefix_with_levels() -> None:
    d = Decoder(prefix="acme/social/crisisd/")
    (m,) = d.decode("acme/social/crisisd/mentions/brand/x", enc(mention(1)))
    assert (m.brand, m.channel) == ("brand", "x")
    assert d.decode("crisisd/mentions/brand/x", enc(mention(1))) == []
    assert d.deadletter_topic == "acme/social/crisisd/deadletter"


def test_records_carry_their_series() -> None:
    d = Decoder()
    m = d.decode_record({**mention(1), "brand": "acme", "channel": "reddit"})
    assert isinstance(m, Mention) and (m.brand, m.channel) == ("acme", "reddit")
    p = d.decode_record({"ts": 1_700_000_000, "volume": 9, "brand": "acme", "channel": "x"})
    assert p == MetricPoint(1_700_000_000.0, "acme", "x", 9)
    line = enc({**mention(2), "brand": "acme", "channel": "reddit"})
    assert d.decode_line(line).id == "m2"  # type: ignore[union-attr]
    bad = [
        ("missing_field", {**mention(1), "channel": "x"}),
        ("wrong_type", {**mention(1), "brand": 3, "channel": "x"}),
        ("bad_topic", {**mention(1), "brand": "", "channel": "x"}),
        ("bad_topic", {**mention(1), "brand": "a/b", "channel": "x"}),
        ("not_object", [mention(1)]),
        ("wrong_type", {**mention(1), "brand": "a", "channel": "x", 1: 2}),
        ("out_of_range", {"ts": 1, "volume": 1, "negative": 2, "brand": "a", "channel": "x"}),
    ]
    for reason, obj in bad:
        before = d.invalid[reason]
        assert d.decode_record(obj) is None, obj
        assert d.invalid[reason] == before + 1, (reason, obj)
    assert d.decode_line(b"{nope") is None and d.invalid["bad_json"] == 1
    consistent(d)


def test_rejections_are_logged_at_most_once_per_reason_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(decode_module.time, "monotonic", lambda: now[0])
    d = Decoder()
    with capture_logs() as logs:
        for _ in range(100):
            d.decode(T, b"{bad")
            d.decode(T, b"7")
        now[0] += 9.9
        d.decode(T, b"{bad")
        now[0] += 0.2
        d.decode(T, b"{bad")
    rejected = [e for e in logs if e["event"] == "payload_rejected"]
    assert [(e["reason"], e["suppressed"]) for e in rejected] == [
        ("bad_json", 0),
        ("not_object", 0),
        ("bad_json", 100),
    ]
    assert rejected[0]["topic"] == T and rejected[0]["sample"] == "{bad"
    assert d.invalid == {"bad_json": 102, "not_object": 100}


def test_deadletters_keep_the_raw_payload_once() -> None:
    d = Decoder(keep_deadletters=True)
    d.decode(T, enc(mention(1)))
    assert d.take_deadletters() == []
    batch = enc([mention(1), {"id": 1}, mention(2), 5])
    d.decode(T, batch)
    d.decode(T, b"{x")
    d.decode("crisisd/other", b"{}")
    d.decode(T, enc(mention(1, ts=10**13)))  # fails after typed decoding
    letters = d.take_deadletters()
    assert [(dl.payload, dl.reason, dl.rejected) for dl in letters] == [
        (batch, "wrong_type", 2),
        (b"{x", "bad_json", 1),
        (b"{}", "bad_topic", 1),
        (enc(mention(1, ts=10**13)), "bad_timestamp", 1),
    ]
    assert d.take_deadletters() == []
    assert Decoder().decode(T, b"{x") == [] and Decoder().take_deadletters() == []


# -- fuzzing -------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**40), max_value=2**45),
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.datetimes().map(lambda t: t.isoformat()),
    st.text(max_size=30),
    json_values,
)
maybe = st.one_of
mentionish = st.fixed_dictionaries(
    {},
    optional={
        "id": maybe(st.text(max_size=10), json_values),
        "ts": timestamps,
        "text": maybe(st.text(max_size=40), json_values),
        "author": maybe(st.text(max_size=10), json_values),
        "followers": maybe(st.integers(min_value=-5, max_value=2**65), json_values),
        "sentiment": maybe(st.floats(min_value=-1.5, max_value=1.5), st.none(), json_values),
        "lang": maybe(st.text(max_size=3), json_values),
        "url": st.text(max_size=10),
        "volume": maybe(st.integers(min_value=-3, max_value=50), json_values),
        "negative": maybe(st.integers(min_value=-3, max_value=60), json_values),
        "other": json_values,
    },
)
items = mentionish | json_values
topics = st.sampled_from([T, M, "crisisd/mentions//x", "crisisd/metrics/a/b", "junk"])
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def quiet_logs() -> Any:
    """Keep the rejection logs in memory: rendering them would dominate the run."""
    with capture_logs() as logs:
        yield logs


@FUZZ
@given(topic=topics, payload=st.binary(max_size=300))
def test_fuzz_random_bytes_never_raise(topic: str, payload: bytes) -> None:
    d = Decoder(max_payload=200, keep_deadletters=True)
    d.decode(topic, payload)
    consistent(d)


@FUZZ
@given(topic=topics, body=st.one_of(items, st.lists(items, max_size=8)))
def test_fuzz_json_structures_never_raise_and_counts_add_up(topic: str, body: Any) -> None:
    d = Decoder(keep_deadletters=True)
    events = d.decode(topic, json.dumps(body).encode())
    consistent(d)
    if topic in (T, M) and isinstance(body, list):
        assert d.items == len(body)
    assert d.valid.total() == len(events)
    assert all(math.isfinite(e.ts) and 0 <= e.ts < decode_module.MAX_TS for e in events)
    if d.invalid:
        assert len(d.take_deadletters()) == 1


@FUZZ
@given(batch=st.lists(items, min_size=1, max_size=8), topic=st.sampled_from([T, M]))
def test_fuzz_a_batch_decodes_like_its_items_one_by_one(batch: list[Any], topic: str) -> None:
    """The typed fast path and the per-item fallback must agree exactly.

    One bad item sends the whole batch down the per-item path, while a batch
    of one good item takes the fast path: their results must be the same.
    """
    whole, single = Decoder(), Decoder()
    events = whole.decode(topic, json.dumps(batch).encode())
    one_by_one = [e for item in batch for e in single.decode(topic, json.dumps([item]).encode())]
    assert events == one_by_one
    assert whole.invalid == single.invalid and whole.valid == single.valid


@FUZZ
@given(obj=mentionish)
def test_fuzz_records_decode_like_messages(obj: dict[str, Any]) -> None:
    """Replay and live accept the same data: a record is a message plus its series."""
    live, replay = Decoder(), Decoder()
    kind_topic = M if "volume" in obj else T
    from_live = live.decode(kind_topic, json.dumps(obj).encode())
    from_replay = replay.decode_record({**obj, "brand": "acme", "channel": "twitter"})
    assert from_live == ([from_replay] if from_replay is not None else [])
    assert live.invalid == replay.invalid
    consistent(replay)


def test_live_an_item_stamped_past_the_clock_is_refused_and_its_neighbours_kept() -> None:
    """A producer an hour ahead (a wrong time zone) would close every series' buckets."""
    now = time.time()
    batch = [mention(1, ts=now - 5), mention(2, ts=now + 3600), mention(3, ts=now + 60)]
    live = Decoder(max_ahead=900.0)
    with capture_logs() as logs:
        assert ids(live.decode(T, enc(batch))) == ["m1", "m3"]  # a minute fast: clock skew
    assert live.invalid == {"bad_timestamp": 1}
    assert "s ahead of this host's clock" in logs[0]["detail"]
    consistent(live)
    assert ids(Decoder().decode(T, enc(batch))) == ["m1", "m2", "m3"]  # replay: history
