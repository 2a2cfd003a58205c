"""Term extraction and the emerging-term detector: lexicon crises, trends, bounded memory."""

from __future__ import annotations

import pickle
import random
import time

import pytest

from detectors.terms import TermDetector, extract_terms, load_lexicon

T0 = 1_700_006_400.0
B = 300.0
DAY = 86400.0


def test_extract_terms_words_hashtags_phrases():
    terms = extract_terms("RT @brand: The App is NOT working… again!! #Fail data-breach?")
    assert "app" in terms and "#fail" in terms and "working" in terms
    assert "not working" in terms and "data breach" in terms
    assert "the" not in terms and "is" not in terms and "not" not in terms


def test_extract_terms_is_fast():
    text = ("Just tried to order from the new store and the app is not working again, so "
            "annoying #fail can't believe this happens every single week")
    n = 5000
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            extract_terms(text)
        best = min(best, (time.perf_counter() - start) / n)
    # a loose bound: this machine is shared; the bench prints the real figure (target ~5 µs)
    assert best < 200e-6


def test_lexicon_categories_and_custom_file(tmp_path):
    lex = load_lexicon()
    assert {lex.category[t] for t in ("recall", "data breach", "not working", "lawsuit",
                                       "boycott")} == {"safety", "security", "outage", "legal",
                                                       "boycott"}
    path = tmp_path / "lex.yaml"
    path.write_text("outage:\n  - kaput\n  - gone dark\n")
    custom = load_lexicon(path)
    assert custom.category == {"kaput": "outage", "gone dark": "outage"}
    assert "gone dark" in extract_terms("the site has gone dark", custom)
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_lexicon(bad)


def chatter(rng: random.Random, volume: int) -> dict[str, int]:
    vocab = ["coffee", "love", "morning", "order", "store", "app", "price", "thanks", "new"]
    bag: dict[str, int] = {}
    for _ in range(volume * 3):
        w = rng.choice(vocab) if rng.random() < 0.8 else f"rare{rng.randint(0, 5000)}"
        bag[w] = bag.get(w, 0) + 1
    return bag


def warmed(days: float = 1.2, volume: int = 40, seed: int = 0) -> tuple[TermDetector, float]:
    rng = random.Random(seed)
    det = TermDetector(bucket=B, warmup=DAY)
    t = T0
    for _ in range(int(days * DAY / B)):
        bag = chatter(rng, volume)
        det.score_terms(t, bag, volume)
        det.learn_terms(t, bag, volume)
        t += B
    return det, t


def test_a_handful_of_crisis_words_at_low_volume_is_a_crisis():
    det, t = warmed(volume=15)
    bag = chatter(random.Random(1), 15)
    bag.update({"data breach": 4, "breach": 4, "data": 4})
    scores = {s.term: s for s in det.score_terms(t, bag, 15)}
    assert "data breach" in scores
    hit = scores["data breach"]
    assert hit.category == "security" and hit.observed == 4 and hit.score > 0.999
    assert hit.expected < 0.1


def test_a_trickle_of_crisis_words_at_a_small_brand_is_a_crisis_within_the_hour():
    # A mention a minute: no bucket ever holds three "data breach" mentions, an hour does.
    rng = random.Random(5)
    det = TermDetector(bucket=60, warmup=DAY)
    t = T0
    for _ in range(int(1.2 * DAY / 60)):
        bag = chatter(rng, 1)
        det.score_terms(t, bag, 1)
        det.learn_terms(t, bag, 1)
        t += 60
    start, alerts, quiet_word = t, [], []
    for minute in range(180):
        bag = chatter(rng, 1)
        if minute % 4 == 0:  # a "data breach" mention every four minutes, and a new word
            bag.update({"data breach": 1, "breach": 1, "data": 1, "zyzzyva": 1})
        found = det.score_terms(t, bag, 2 if minute % 4 == 0 else 1)
        alerts += [(t - start, s) for s in found if s.term == "data breach" and s.score >= 0.999]
        quiet_word += [s for s in found if s.term == "zyzzyva" and s.score >= 0.999]
        det.learn_terms(t, bag, 2 if minute % 4 == 0 else 1)
        t += 60
    assert alerts, "the trickle never alerted"
    first_after, first = alerts[0]
    assert first_after <= 8 * 60  # the third mention
    assert first.category == "security" and first.observed == 3
    assert len(alerts) <= 3  # it grows every minute, yet re-alerts only a thousand times worse
    assert quiet_word == []  # a new ordinary word at the same pace is not news


def test_a_merely_new_word_is_not_but_a_trending_one_is():
    det, t = warmed()
    bag = chatter(random.Random(2), 40)
    bag["zyzzyva"] = 4  # four mentions of a word never seen: not news
    assert all(s.term != "zyzzyva" for s in det.score_terms(t, bag, 40))
    bag["#boycottbrand"] = 30  # a new hashtag on most of the timeline: news
    trending = {s.term: s for s in det.score_terms(t, bag, 40)}
    assert "#boycottbrand" in trending and trending["#boycottbrand"].category is None


def test_a_hashtag_climbing_bucket_by_bucket_alerts_once_it_is_news():
    """A term is held from the score that alerts, not from a quieter one before it.

    Held from 0.99, the hashtag's first, not yet alarming bucket became the
    bar the next ones were judged against, and it never alerted however far
    it climbed (to 24 of 40 mentions here; it had reported at 14 of 40).
    """
    det, t = warmed()
    rng, alerts = random.Random(6), []
    for count in range(6, 25):
        bag = chatter(rng, 40)
        bag["#brandfail"] = count
        alerts += [count for s in det.score_terms(t, bag, 40)
                   if s.term == "#brandfail" and s.score >= 0.999]
        det.learn_terms(t, bag, 40)
        t += B
    assert len(alerts) == 1, alerts  # and once: it climbs, but not a thousandfold
    assert alerts[0] <= 20


def test_normal_chatter_scores_nothing_and_is_warm_only_after_warmup():
    rng = random.Random(3)
    det = TermDetector(bucket=B, warmup=DAY)
    t = T0
    alerts = 0
    for i in range(int(2 * DAY / B)):
        bag = chatter(rng, 40)
        out = det.score_terms(t, bag, 40)
        if i < int(DAY / B) - 1:
            assert out == [] and not det.warm
        alerts += sum(1 for s in out if s.score >= 0.999)
        det.learn_terms(t, bag, 40)
        t += B
    assert det.warm and alerts == 0


def test_a_crisis_term_alerts_once_then_only_when_it_grows():
    """Again only a thousand times more surprising, and never past what a score can say.

    Six "recall" of forty mentions is already at the floor of ``p``
    (1e-15): thirty is not news again, though its unsayable ``p`` is
    smaller still (it was, and a storm pinned at the floor alerted anew).
    """
    det, t = warmed()
    bag = chatter(random.Random(4), 40)
    for count, news in ((3, True), (3, False), (6, True), (30, False)):
        bag["recall"] = count
        found = det.score_terms(t, bag, 40)
        assert [s.term for s in found] == (["recall"] if news else []), count
        det.learn_terms(t, bag, 40)
        t += B


def test_memory_is_bounded_and_pickle_round_trip_keeps_scores():
    det = TermDetector(bucket=B, warmup=DAY, capacity=128)
    t = T0
    for i in range(400):
        det.learn_terms(t, {f"w{i}-{k}": 1 for k in range(50)} | {"coffee": 20}, 60)
        t += B
    assert det.n_terms() <= 160
    assert det.share("coffee") == pytest.approx(20 / 60, rel=1e-6)
    clone = pickle.loads(pickle.dumps(det))
    assert len(pickle.dumps(det)) < 20_000
    bag = {"coffee": 25, "outage": 5}
    assert clone.score_terms(t, bag, 60) == det.score_terms(t, bag, 60)
