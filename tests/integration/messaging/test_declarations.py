"""What the broker already has is used as it is; only what is absent is declared as configured.

oslo.messaging declares the metering exchange and the notification queues with
its own ``amqp_durable_queues`` (false by default) and ``rabbit_quorum_queue``;
whoever declares first wins, and before, a second declaration that differed
failed with 406 PRECONDITION_FAILED: the agent could not publish, the listener
could not start.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import oslo_messaging
import pytest
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue
from oslo_config import cfg
from tests.support import OwnBus, Threads, wait_for
from tests.unit.notification.helpers import load

from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.meter import counter_to_message
from nephoscope.messaging.publisher import Publisher
from nephoscope.notification import build_processor
from nephoscope.notification.listener import NotificationListener
from nephoscope.storage import open_store

pytestmark = pytest.mark.integration

SECRET = "declarations"
NOW = datetime.now(UTC)


def predeclare(url: str, exchange: str, queue: str, *, durable: bool, **arguments: Any) -> None:
    """The exchange and queue as another program declared them first."""
    with Connection(url) as conn:
        target = Exchange(exchange, type="topic", durable=durable)
        Queue(
            queue,
            exchange=target,
            routing_key=queue,
            durable=durable,
            queue_arguments=arguments or None,
        )(conn.channel()).declare()


def is_declared_as(url: str, queue: str, *, durable: bool, **arguments: Any) -> bool:
    """Whether the broker takes this declaration of ``queue`` (it refuses one that differs)."""
    with Connection(url) as conn:
        try:
            conn.channel().queue_declare(
                queue, durable=durable, auto_delete=False, arguments=arguments or None
            )
        except PreconditionFailed:
            return False
    return True


def counters(count: int) -> list[Counter]:
    return [
        Counter("cpu", "cumulative", "ns", i, "u", "p", f"vm-{i % 3}", NOW, id=str(uuid.uuid4()))
        for i in range(count)
    ]


def publish_and_store(settings: Settings, tmp_path: Any, count: int = 50) -> Collector:
    """Publish ``count`` samples with our publisher, store them with our collector."""
    store = open_store(settings.store.model_copy(update={"url": f"sqlite:///{tmp_path}/s.db"}))
    collector = Collector(settings, store)
    publisher = Publisher(settings)
    stop, ready = threading.Event(), threading.Event()
    try:
        with Threads() as threads:
            threads.start(collector.run, stop, ready, stop=stop)
            assert ready.wait(10), "the collector did not start"
            assert publisher.publish(counters(count)) == count
            wait_for(lambda: collector.stats.stored == count)
    finally:
        publisher.close()
        store.close()
    return collector


@pytest.mark.parametrize("first", [True, False], ids=["durable-first", "non-durable-first"])
def test_a_metering_exchange_and_queue_declared_otherwise_are_used_as_they_are(
    own_bus: OwnBus, tmp_path: Any, first: bool, caplog: pytest.LogCaptureFixture
) -> None:
    predeclare(own_bus.url, own_bus.exchange, own_bus.metering_queue, durable=first)
    settings = own_bus.settings(
        metering_secret=SECRET,
        bus={"durable": not first},
        collector={"batch_timeout": 0.05},
        publisher={"buffer": {"path": tmp_path / "buffer.db"}},
    )
    with caplog.at_level(logging.INFO, logger="nephoscope.messaging.declare"):
        collector = publish_and_store(settings, tmp_path)
    assert collector.stats.stored == 50
    assert is_declared_as(own_bus.url, own_bus.metering_queue, durable=first), "left as it was"
    said = [
        r
        for r in caplog.records
        if r.name == "nephoscope.messaging.declare" and own_bus.metering_queue in r.getMessage()
    ]
    assert said, "adopting a queue is said"
    if not first:
        assert said[0].levelno == logging.WARNING and "non-durable" in said[0].getMessage()
        assert len(said) == 1, "said once, though the publisher and collector both adopt it"


def test_quorum_queues_are_declared_when_asked_for(own_bus: OwnBus, tmp_path: Any) -> None:
    settings = own_bus.settings(
        metering_secret=SECRET,
        bus={"queue_type": "quorum", "durable": False},
        collector={"batch_timeout": 0.05},
        publisher={"buffer": {"path": tmp_path / "buffer.db"}},
    )
    collector = publish_and_store(settings, tmp_path)
    assert collector.stats.stored == 50
    assert is_declared_as(
        own_bus.url, own_bus.metering_queue, durable=True, **{"x-queue-type": "quorum"}
    )
    assert not is_declared_as(own_bus.url, own_bus.metering_queue, durable=True)


def test_a_classic_queue_that_exists_is_used_when_quorum_is_configured(
    own_bus: OwnBus, tmp_path: Any
) -> None:
    predeclare(own_bus.url, own_bus.exchange, own_bus.metering_queue, durable=True)
    settings = own_bus.settings(
        metering_secret=SECRET,
        bus={"queue_type": "quorum"},
        collector={"batch_timeout": 0.05},
        publisher={"buffer": {"path": tmp_path / "buffer.db"}},
    )
    assert publish_and_store(settings, tmp_path).stats.stored == 50
    assert KombuBus(settings.bus).queue_depth() == 0


def test_the_listener_consumes_queues_that_durable_oslo_services_declared(
    own_bus: OwnBus, tmp_path: Any
) -> None:
    """A cloud whose services run with amqp_durable_queues = true and rabbit_quorum_queue."""
    exchange, topic = own_bus.notification_exchange, own_bus.notification_topic
    conf = cfg.ConfigOpts()
    conf([])
    oslo_messaging.set_transport_defaults(control_exchange=exchange)
    transport = oslo_messaging.get_notification_transport(
        conf, url="rabbit://guest:guest@127.0.0.1:5672/"
    )
    conf.set_override("amqp_durable_queues", True, group="oslo_messaging_rabbit")
    conf.set_override("rabbit_quorum_queue", True, group="oslo_messaging_rabbit")
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id="compute.compute-1", driver="messagingv2", topics=[topic]
        )
        exists = load("compute.instance.exists")
        notifier.info({"project_id": "p"}, "compute.instance.exists", exists["payload"])
    finally:
        transport.cleanup()
    assert is_declared_as(
        own_bus.url, f"{topic}.info", durable=True, **{"x-queue-type": "quorum"}
    ), "oslo.messaging declared it a durable quorum queue"

    settings = Settings(
        metering_secret=SECRET,
        bus={"url": "memory://", "topic": f"m-{own_bus.token}"},
        publisher={"buffer": {"path": tmp_path / "buffer.db"}},
        notifications={
            "url": own_bus.url,
            "exchanges": [exchange],
            "topics": [topic],
            "batch_timeout": 0.05,
            "durable": False,  # as configured for oslo.messaging's defaults
        },
    )
    publisher = Publisher(settings, sink=Recording())
    listener = NotificationListener(settings, build_processor(settings), publisher)
    stop, ready = threading.Event(), threading.Event()
    try:
        with Threads() as threads:
            threads.start(listener.run, stop, ready, stop=stop)
            assert ready.wait(10), "the listener did not start"
            wait_for(lambda: listener.stats.metered == 1)
    finally:
        publisher.close()
    assert listener.stats.counters == 6


def test_dead_letters_go_to_a_dead_letter_queue_declared_otherwise(
    own_bus: OwnBus, tmp_path: Any
) -> None:
    dead = f"{own_bus.metering_queue}.dead"
    with Connection(own_bus.url) as conn:
        Queue(dead, durable=False)(conn.channel()).declare()
    settings = own_bus.settings(metering_secret=SECRET, collector={"batch_timeout": 0.05})
    store = open_store(settings.store.model_copy(update={"url": f"sqlite:///{tmp_path}/s.db"}))
    collector = Collector(settings, store)
    bus = KombuBus(settings.bus)
    stop, ready = threading.Event(), threading.Event()
    try:
        with Threads() as threads:
            threads.start(collector.run, stop, ready, stop=stop)
            assert ready.wait(10)
            (forged,) = [counter_to_message(c, "not the secret", c.id or "") for c in counters(1)]
            bus.send([forged])
            wait_for(lambda: collector.stats.dead_letters == 1)
    finally:
        bus.close()
        store.close()
    with Connection(own_bus.url) as conn:
        assert conn.channel().queue_declare(dead, passive=True).message_count == 1


class Recording:
    """A sink that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, messages: Any) -> None:
        self.messages.extend(messages)

    def close(self) -> None:
        pass
