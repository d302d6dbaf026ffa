"""Poison meter messages on RabbitMQ: each goes to ``<queue>.dead`` with its reason, the
good ones beside and after it are stored, and listing the dead letters takes none away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kombu import Connection
from tests.support import OwnBus, running

from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.deadletter import (
    HEADER_PREFIX,
    Letter,
    QueueDeadLetters,
    depths,
    peek,
)
from nephoscope.messaging.meter import counter_to_message
from nephoscope.messaging.publisher import Publisher
from nephoscope.signing import compute_signature
from nephoscope.storage import open_store

pytestmark = pytest.mark.integration

SECRET = "dlq-test"
NOW = datetime.now(UTC)


@pytest.fixture
def settings(own_bus: OwnBus, tmp_path: Path) -> Settings:
    return own_bus.settings(
        metering_secret=SECRET,
        store={"url": f"sqlite:///{tmp_path / 'dlq.db'}"},
        collector={"batch_timeout": 0.05},
        notifications={"topics": [own_bus.notification_topic]},
    )


def counters(count: int, first: int = 0) -> list[Counter]:
    return [
        Counter("cpu", "cumulative", "ns", i, None, "p", f"r{i % 5}", NOW, id=str(uuid.uuid4()))
        for i in range(first, first + count)
    ]


def cli(
    settings: Settings, tmp_path: Path, *args: str, **env_extra: str
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "dlq.yaml"
    bus = settings.bus
    config.write_text(
        f"metering_secret: {SECRET}\nbus:\n  url: '{bus.url}'\n  exchange: {bus.exchange}\n"
        f"  topic: {bus.topic}\nstore:\n  url: '{settings.store.url}'\n"
        f"notifications:\n  topics: [{settings.notifications.topics[0]}]\n",
        encoding="utf-8",
    )
    keep = {"NEPHOSCOPE_PUBLISHER__BUFFER__PATH"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEPHOSCOPE_") or k in keep}
    env["NEPHOSCOPE_CONFIG"] = str(config)
    env["COLUMNS"] = "250"  # tables fold long queue names otherwise
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "nephoscope", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dead_queue_depth(settings: Settings) -> int:
    name = KombuBus(settings.bus).queue.name + ".dead"
    with Connection(settings.bus.url) as conn:
        return depths(conn, [name])[name]


def test_poison_goes_to_the_dead_letter_queue_and_never_blocks_the_queue(
    settings: Settings, tmp_path: Path
) -> None:
    bus = KombuBus(settings.bus)
    # Poison first: if it blocked the queue, nothing after it would be stored.
    bus.publish_raw(b"this is not json")
    forged = counter_to_message(counters(1, 1000)[0], "wrong secret")
    bad_type = counter_to_message(counters(1, 2000)[0], SECRET)
    bad_type["counter_type"] = "sideways"
    bad_type["message_signature"] = compute_signature(bad_type, SECRET)
    good = [counter_to_message(c, SECRET) for c in counters(3, 3000)]
    bus.send([good[0], forged, good[1], bad_type, good[2]])
    bus.close()
    publisher = Publisher(settings)
    assert publisher.publish(counters(600)) == 600
    publisher.close()

    store = open_store(settings.store)
    collector = Collector(settings, store)
    with running(collector.run, threading.Event()):
        deadline = time.monotonic() + 30
        while collector.stats.stored < 603 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert collector.stats.stored == 603 and collector.stats.dead_letters == 3
    assert store.status().samples == 603
    assert store.dead_letters() == [], "on RabbitMQ the dead-letter queue is the place"
    store.close()
    assert bus.queue_depth() == 0, "every message acknowledged, poison included"
    assert dead_queue_depth(settings) == 3

    # The CLI lists them, twice, and they are still there.
    for _ in range(2):
        listed = cli(settings, tmp_path, "dead-letters", "--json")
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [r["queue"] for r in rows] == [f"{bus.queue.name}.dead"] * 3
        by_reason = {r["reason"].split(":")[0]: r for r in rows}
        assert set(by_reason) == {"body is not JSON", "bad signature", "counter_type"}
        assert by_reason["bad signature"]["message_id"] == forged["message_id"]
        assert by_reason["counter_type"]["message_id"] == bad_type["message_id"]
        assert json.loads(by_reason["bad signature"]["body"]) == forged, "the meter message alone"
        assert by_reason["body is not JSON"]["body"] == "this is not json"
        assert all(datetime.fromisoformat(r["received_at"]) >= NOW for r in rows)
    table = cli(settings, tmp_path, "dead-letters")
    assert table.returncode == 0 and "bad signature" in table.stdout
    assert dead_queue_depth(settings) == 3, "listing took none away"

    with Connection(settings.bus.url) as conn:
        message = conn.channel().basic_get(f"{bus.queue.name}.dead", no_ack=True)
    assert message.headers[f"{HEADER_PREFIX}reason"].startswith("body is not JSON")
    assert message.headers[f"{HEADER_PREFIX}queue"] == bus.queue.name
    assert message.headers[f"{HEADER_PREFIX}exchange"] == settings.bus.exchange


def letters(settings: Settings, count: int, queue: str) -> list[Letter]:
    return [
        Letter(
            body=f'{{"n": {i}}}'.encode(),
            reason=f"reason {i}",
            queue=queue,
            exchange="nova",
            routing_key=queue,
            received_at=NOW,
            message_id=f"m{i}",
        )
        for i in range(count)
    ]


def test_a_put_is_confirmed_whole_and_peek_keeps_order_and_takes_nothing(
    settings: Settings,
) -> None:
    queue = KombuBus(settings.bus).queue.name
    sink = QueueDeadLetters(settings.bus.url, ".dead")
    try:
        sink.put(letters(settings, 500, queue))
        sink.put(letters(settings, 1, queue))  # the same channel, tags go on
    finally:
        sink.close()
    assert dead_queue_depth(settings) == 501
    with Connection(settings.bus.url) as conn:
        for _ in range(2):
            first = peek(conn, [f"{queue}.dead", "no-such-queue.dead"], 3)
            assert [(q.message_id, q.reason) for q in first] == [
                ("m0", "reason 0"),
                ("m1", "reason 1"),
                ("m2", "reason 2"),
            ]
            assert first[0].received_at == NOW and first[0].body == b'{"n": 0}'
    assert dead_queue_depth(settings) == 501


def test_status_shows_the_dead_letter_queues(settings: Settings, tmp_path: Path) -> None:
    notification_queue = f"{settings.notifications.topics[0]}.info"
    sink = QueueDeadLetters(settings.bus.url, ".dead")
    try:
        sink.put(letters(settings, 2, notification_queue))
    finally:
        sink.close()
    done = cli(settings, tmp_path, "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    metering = KombuBus(settings.bus).queue.name
    assert report["dead_letter_queues"] == {
        f"{metering}.dead": 0,  # never declared: nothing was dead-lettered there
        f"{notification_queue}.dead": 2,
        f"{settings.notifications.topics[0]}.sample.dead": 0,
    }
    assert report["dead_letters"] == 0
    table = cli(settings, tmp_path, "status")
    assert f"dead letters in {notification_queue}.dead" in table.stdout
    assert "dead letters in the store" in table.stdout

    listed = cli(settings, tmp_path, "dead-letters", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["queue"], r["reason"]) for r in rows] == [
        (f"{notification_queue}.dead", "reason 0"),
        (f"{notification_queue}.dead", "reason 1"),
    ]


def test_an_unreachable_notification_bus_fails_status(settings: Settings, tmp_path: Path) -> None:
    away = "amqp://guest:guest@127.0.0.1:1//"
    done = cli(settings, tmp_path, "status", "--json", NEPHOSCOPE_NOTIFICATIONS__URL=away)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["bus_reachable"] is True and report["notification_bus_reachable"] is False
