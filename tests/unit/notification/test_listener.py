"""The listener on the embedded bus (kombu's memory transport): no service needed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Producer
from tests.support import Threads, wait_for
from tests.unit.notification.helpers import load, processor, v1, v2

from nephoscope.config import Settings
from nephoscope.messaging.publisher import Publisher
from nephoscope.notification.listener import (
    Letter,
    NotificationListener,
    StoreDeadLetters,
    build_queues,
)
from nephoscope.storage import open_store


class Sink:
    """Records what the publisher sends; fails the first ``failures`` sends."""

    def __init__(self, failures: int = 0) -> None:
        self.messages: list[dict[str, Any]] = []
        self.failures = failures

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("bus down")
        self.messages.extend(messages)

    def close(self) -> None:
        pass


class Letters:
    def __init__(self) -> None:
        self.letters: list[Letter] = []

    def put(self, letters: Sequence[Letter]) -> None:
        self.letters.extend(letters)


@pytest.fixture
def settings() -> Settings:
    name = f"nova-{uuid.uuid4().hex[:8]}"
    return Settings(
        metering_secret="s",
        bus={"url": "memory://", "topic": f"m-{name}"},
        notifications={
            "exchanges": [name],
            "topics": [f"t-{name}"],
            "batch_timeout": 0.05,
            "prefetch": 8,
        },
    )


def send(settings: Settings, *bodies: bytes, priority: str = "info") -> None:
    ns = settings.notifications
    with Connection("memory://localhost//") as conn:
        channel = conn.channel()
        for queue in build_queues([_target(settings)], ns):
            queue.bind(channel).declare()
        producer = Producer(channel)
        for body in bodies:
            producer.publish(
                body,
                exchange=Exchange(ns.exchanges[0], type="topic", durable=False),
                routing_key=f"{ns.topics[0]}.{priority}",
                content_type="application/json",
            )


def _target(settings: Settings) -> Any:
    from nephoscope.plugin import ExchangeTopics

    return ExchangeTopics(settings.notifications.exchanges[0], tuple(settings.notifications.topics))


def depth(settings: Settings, priority: str = "info") -> int:
    with Connection("memory://localhost//") as conn:
        name = f"{settings.notifications.topics[0]}.{priority}"
        return int(conn.channel().queue_declare(name, passive=True).message_count)


@pytest.fixture
def running(settings: Settings) -> Iterator[Callable[..., NotificationListener]]:
    with Threads(timeout=10) as threads:

        def start(sink: Sink, letters: Any = None) -> NotificationListener:
            listener = NotificationListener(
                settings, processor(), Publisher(settings, sink), dead_letters=letters
            )
            stop, ready = threading.Event(), threading.Event()
            threads.start(listener.run, stop, ready, stop=stop)
            assert ready.wait(5)
            return listener

        yield start


def test_queues_are_declared_as_oslo_messaging_declares_them(settings: Settings) -> None:
    queues = build_queues([_target(settings)], settings.notifications)
    topic = settings.notifications.topics[0]
    assert sorted(q.name for q in queues) == [f"{topic}.info", f"{topic}.sample"]
    for queue in queues:
        assert queue.durable is False and queue.auto_delete is False
        (bound,) = queue.bindings
        assert bound.routing_key == queue.name
        assert (bound.exchange.type, bound.exchange.durable) == ("topic", False)
    pooled = build_queues(
        [_target(settings)], settings.notifications.model_copy(update={"pool": "nephoscope"})
    )
    assert [q.name for q in pooled] == ["nephoscope"]
    assert sorted(b.routing_key for b in pooled[0].bindings) == [f"{topic}.info", f"{topic}.sample"]


def test_notifications_become_published_counters_then_are_acknowledged(
    settings: Settings, running: Callable[..., NotificationListener]
) -> None:
    sink = Sink()
    listener = running(sink)
    exists, volume = load("compute.instance.exists"), load("volume.create.end")
    send(settings, v1(exists), v2(exists), v2(volume))
    send(settings, v2(load("image.send")), priority="sample")
    wait_for(lambda: listener.stats.metered == 4)
    names = sorted(m["counter_name"] for m in sink.messages)
    assert names.count("memory") == 2 and names.count("volume.size") == 1
    assert "image.download" in names
    assert all(m["message_signature"] for m in sink.messages)
    assert (listener.stats.counters, listener.stats.dead_lettered) == (15, 0)
    assert depth(settings) == depth(settings, "sample") == 0


def test_bad_notifications_are_dead_lettered_and_never_requeued(
    settings: Settings, running: Callable[..., NotificationListener]
) -> None:
    sink, letters = Sink(), Letters()
    listener = running(sink, letters)
    bad_volume = load("volume.create.end")
    bad_volume["payload"]["size"] = "ten"
    send(
        settings,
        b"\x00 not json",
        v2({"payload": {}}),
        v2(bad_volume),
        v1(load("compute.instance.exists")),
        v1(dict(load("compute.instance.exists"), priority="ERROR")),
        v1(dict(load("compute.instance.exists"), event_type="scheduler.select")),
    )
    stats = listener.stats
    # Counted once acknowledged; the bad volume is both metered and dead-lettered.
    wait_for(lambda: stats.metered + stats.ignored + stats.unhandled + stats.dead_lettered >= 7)
    reasons = [letter.reason for letter in letters.letters]
    assert len(reasons) == 3
    assert reasons[0].startswith("body is not JSON")
    assert reasons[1] == "no event_type"
    assert "volume.size" in reasons[2] and "'ten' is not a number" in reasons[2]
    assert letters.letters[0].body == b"\x00 not json"
    assert letters.letters[2].event_type == "volume.create.end"
    assert {letter.routing_key for letter in letters.letters} == {
        f"{settings.notifications.topics[0]}.info"
    }
    assert (stats.dead_lettered, stats.ignored, stats.unhandled, stats.metered) == (3, 1, 1, 2)
    assert len(sink.messages) == 6  # the good instance notification still counts
    assert depth(settings) == 0


class FailingPublisher:
    """A publisher whose ``publish`` raises the first ``failures`` times, then records."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.counters: list[Any] = []

    def publish(self, counters: Sequence[Any], *, droppable: bool = True) -> int:
        assert not droppable, "counters of notifications are never dropped"
        if self.failures:
            self.failures -= 1
            raise ConnectionError("bus down")
        self.counters.extend(counters)
        return len(counters)

    def flush(self) -> bool:
        return True


def test_a_batch_the_publisher_refuses_goes_back_to_the_bus_and_comes_again(
    settings: Settings,
) -> None:
    publisher = FailingPublisher(failures=2)
    listener = NotificationListener(settings, processor(), publisher)  # type: ignore[arg-type]
    stop, ready = threading.Event(), threading.Event()
    with Threads(timeout=10) as threads:
        threads.start(listener.run, stop, ready, stop=stop)
        assert ready.wait(5)
        send(settings, v2(load("compute.instance.exists")))
        wait_for(lambda: len(publisher.counters) == 6)
    assert listener.stats.publish_errors == 2
    assert listener.stats.metered == 1
    assert depth(settings) == 0


def test_dead_letters_of_the_embedded_bus_go_to_the_store(
    settings: Settings, running: Callable[..., NotificationListener], tmp_path: Path
) -> None:
    store = open_store(settings.store.model_copy(update={"url": f"sqlite:///{tmp_path / 's.db'}"}))
    listener = running(Sink(), StoreDeadLetters(store))
    send(settings, b"[1, 2]")
    wait_for(lambda: listener.stats.dead_lettered == 1)
    (letter,) = store.dead_letters()
    assert letter.body == b"[1, 2]"
    assert "body is a JSON list, not an object" in letter.reason
    assert letter.reason.startswith("notification ? from ")
    store.close()


def test_the_embedded_pipeline_stores_counters_and_dead_letters(
    settings: Settings, tmp_path: Path
) -> None:
    """As `nephoscope run` wires it: listener -> publisher -> memory bus -> collector -> SQLite."""
    from nephoscope.collector import Collector
    from nephoscope.storage.base import SampleFilter

    settings = settings.model_copy(
        update={
            "store": settings.store.model_copy(update={"url": f"sqlite:///{tmp_path / 'e.db'}"}),
            "collector": settings.collector.model_copy(update={"batch_timeout": 0.05}),
        }
    )
    store = open_store(settings.store)
    collector = Collector(settings, store)
    publisher = Publisher(settings)
    listener = NotificationListener(
        settings, processor(), publisher, dead_letters=StoreDeadLetters(store)
    )
    stop = threading.Event()
    try:
        with Threads(timeout=10) as threads:
            for target in (collector.run, listener.run):
                ready = threading.Event()
                threads.start(target, stop, ready, stop=stop)
                assert ready.wait(5)
            send(settings, v2(load("compute.instance.create.end")), v1(load("image.upload")), b"{")
            wait_for(lambda: collector.stats.stored == 8 and listener.stats.dead_lettered == 1)
    finally:
        publisher.close()
    (booting,) = store.samples(SampleFilter(meter="compute.instance.booting.time"))
    assert (booting.volume, booting.unit) == (16.0, "sec")
    (letter,) = store.dead_letters()
    assert letter.body == b"{" and "body is not JSON" in letter.reason
    store.close()
