"""A separate publisher process for the benchmarks: mentions into mosquitto.

Runs as its own process so the broker, the publisher and crisisd do not share
an interpreter (and a GIL). paho's threaded client keeps many QoS 1 messages
in flight, so the publisher is not what limits the measurement.

    python bench/publisher.py --port 1883 --count 100000 --batch 100
"""

from __future__ import annotations

import argparse
import json
import random
import time

import paho.mqtt.client as mqtt

WORDS = (
    "order", "delivery", "support", "refund", "love", "great", "broken", "late", "app",
    "update", "price", "store", "service", "phone", "call", "wait", "help", "thanks", "new",
    "product",
)


def mention(i: int, ts: float, rng: random.Random) -> dict[str, object]:
    """A ~300-byte mention, as a listening tool would publish it."""
    return {
        "id": f"bench-{i}",
        "ts": ts,
        "text": " ".join(rng.choice(WORDS) for _ in range(18)),
        "author": f"user{rng.randrange(100000)}",
        "followers": rng.randrange(50000),
        "sentiment": round(rng.uniform(-1, 1), 3),
        "lang": "en",
        "url": f"https://example.invalid/status/{i}",
    }


def main() -> None:
    """Publish ``--count`` mentions in messages of ``--batch``, then exit."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--brands", type=int, default=10)
    parser.add_argument("--prefix", default="crisisd")
    parser.add_argument("--start", type=float, default=1_767_225_600.0)
    parser.add_argument("--rate", type=float, default=50.0, help="mentions per event-second")
    args = parser.parse_args()
    rng = random.Random(1)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="crisisd-bench-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(args.host, args.port)
    client.loop_start()
    info = None
    started = time.perf_counter()
    for first in range(0, args.count, args.batch):
        items = [mention(i, args.start + i / args.rate, rng)
                 for i in range(first, min(first + args.batch, args.count))]
        brand = f"brand{(first // args.batch) % args.brands}"
        body = json.dumps(items if args.batch > 1 else items[0])
        info = client.publish(f"{args.prefix}/mentions/{brand}/twitter", body, qos=1)
    if info is not None:
        info.wait_for_publish(timeout=600)
    elapsed = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    print(json.dumps({"published": args.count, "seconds": elapsed}))


if __name__ == "__main__":
    main()
