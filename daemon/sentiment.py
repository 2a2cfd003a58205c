"""The enrich stage: score the sentiment of mentions that arrive without one.

VADER costs about 0.2 ms a text, far too much for the event loop (an MQTT
keep-alive must not starve while a batch is scored), so scoring runs in a
worker thread. Mentions that already carry a sentiment pass untouched.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import msgspec
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from daemon.domain import Event, Mention


class SentimentScorer:
    """Fills ``Mention.sentiment`` with VADER's compound score (−1..1)."""

    def __init__(self) -> None:
        self._vader = SentimentIntensityAnalyzer()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vader")
        self.scored = 0

    def _score_texts(self, texts: list[str]) -> list[float]:
        polarity = self._vader.polarity_scores
        return [polarity(text)["compound"] for text in texts]

    async def enrich(self, batch: list[Event]) -> list[Event]:
        """The batch with every mention's sentiment set, order kept."""
        todo = [
            i for i, e in enumerate(batch) if isinstance(e, Mention) and e.sentiment is None
        ]
        if not todo:
            return batch
        texts = [batch[i].text for i in todo]  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        scores = await loop.run_in_executor(self._pool, self._score_texts, texts)
        out = list(batch)
        for i, score in zip(todo, scores, strict=True):
            out[i] = msgspec.structs.replace(out[i], sentiment=score)
        self.scored += len(todo)
        return out

    def close(self) -> None:
        """Stop the worker thread."""
        self._pool.shutdown(wait=False, cancel_futures=True)
