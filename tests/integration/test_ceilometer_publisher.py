"""A real Ceilometer agent's ``notifier://`` publisher can feed our collector.

The samples are sent with the real oslo.messaging ``Notifier``, configured as
Ceilometer's notifier publisher configures it (driver ``messagingv2``, topic
``metering``, event type ``metering``, ``sample`` priority), and must all be
stored by our collector reading RabbitMQ.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import oslo_messaging
import pytest
from kombu import Connection
from oslo_config import cfg

from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.meter import counter_to_message
from nephoscope.storage import open_store

pytestmark = pytest.mark.integration

SECRET = "shared between ceilometer and nephoscope"


@pytest.fixture(params=[True, False], ids=["durable", "oslo-default"])
def exchange(request: pytest.FixtureRequest, rabbitmq_url: str) -> Iterator[tuple[str, bool]]:
    name = f"ceilometer-{uuid.uuid4().hex[:8]}"
    yield name, request.param
    settings = Settings(bus={"url": rabbitmq_url, "exchange": name, "durable": request.param})
    bus = KombuBus(settings.bus)
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        bus.queue.bind(channel).delete()
        bus.exchange.bind(channel).delete()


def test_every_sample_from_oslo_notifier_is_stored(
    exchange: tuple[str, bool], rabbitmq_url: str, tmp_path: Path
) -> None:
    name, durable = exchange
    conf = cfg.ConfigOpts()
    conf([])
    # As Ceilometer does: its control exchange is "ceilometer"; ours is unique per test.
    oslo_messaging.set_transport_defaults(control_exchange=name)
    transport = oslo_messaging.get_notification_transport(
        conf, url="rabbit://guest:guest@127.0.0.1:5672/"
    )
    conf.set_override("amqp_durable_queues", durable, group="oslo_messaging_rabbit")
    notifier = oslo_messaging.Notifier(
        transport,
        publisher_id="telemetry.publisher.compute1",
        driver="messagingv2",
        topics=["metering"],
    )

    settings = Settings(
        metering_secret=SECRET,
        bus={"url": rabbitmq_url, "exchange": name, "topic": "metering", "durable": durable},
        store={"url": f"sqlite:///{tmp_path / 'store.db'}"},
        collector={"batch_timeout": 0.05},
    )
    store = open_store(settings.store)
    collector = Collector(settings, store)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop, ready))
    thread.start()
    assert ready.wait(10), "the collector did not start (queue declared differently?)"

    now = datetime.now(UTC)
    sent = 0
    for batch in range(10):
        meters = [
            counter_to_message(
                Counter("cpu", "cumulative", "ns", 1000 * i, "u1", "p1", f"vm-{i % 7}", now),
                SECRET,
                str(uuid.uuid1()),  # Ceilometer's sample ids are UUID1
            )
            for i in range(batch * 100, batch * 100 + 100)
        ]
        notifier.sample({}, event_type="metering", payload=meters)
        sent += len(meters)
    deadline = time.monotonic() + 30
    while collector.stats.stored < sent and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(30)
    transport.cleanup()
    assert collector.stats.stored == sent == 1000
    assert collector.stats.dead_letters == 0
    assert store.status().samples == 1000
    store.close()
