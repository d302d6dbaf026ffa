"""A real Ceilometer agent's ``notifier://`` publisher can feed our collector.

The samples are sent with the real oslo.messaging ``Notifier``, configured as
Ceilometer's notifier publisher configures it (driver ``messagingv2``, event type
``metering``, ``sample`` priority; its control exchange and topic, ``ceilometer`` and
``metering`` there, are unique to the test here), and must all be stored by our
collector reading RabbitMQ.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import oslo_messaging
import pytest
from oslo_config import cfg
from tests.support import OwnBus, running

from nephoscope.collector import Collector
from nephoscope.counter import Counter
from nephoscope.messaging.meter import counter_to_message
from nephoscope.storage import open_store

pytestmark = pytest.mark.integration

SECRET = "shared between ceilometer and nephoscope"


@pytest.fixture(params=[True, False], ids=["durable", "oslo-default"])
def durable(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_every_sample_from_oslo_notifier_is_stored(
    durable: bool, own_bus: OwnBus, tmp_path: Path
) -> None:
    conf = cfg.ConfigOpts()
    conf([])
    # As Ceilometer does, with its control exchange ("ceilometer") and topic ("metering")
    # unique to this test: the queue is this test's own, whatever the broker holds.
    oslo_messaging.set_transport_defaults(control_exchange=own_bus.exchange)
    transport = oslo_messaging.get_notification_transport(
        conf, url="rabbit://guest:guest@127.0.0.1:5672/"
    )
    conf.set_override("amqp_durable_queues", durable, group="oslo_messaging_rabbit")
    notifier = oslo_messaging.Notifier(
        transport,
        publisher_id="telemetry.publisher.compute1",
        driver="messagingv2",
        topics=[own_bus.topic],
    )

    settings = own_bus.settings(
        metering_secret=SECRET,
        bus={"durable": durable},
        store={"url": f"sqlite:///{tmp_path / 'store.db'}"},
        collector={"batch_timeout": 0.05},
    )
    store = open_store(settings.store)
    collector = Collector(settings, store)
    now = datetime.now(UTC)
    batches = [
        [
            counter_to_message(
                Counter("cpu", "cumulative", "ns", 1000 * i, "u1", "p1", f"vm-{i % 7}", now),
                SECRET,
                str(uuid.uuid1()),  # Ceilometer's sample ids are UUID1
            )
            for i in range(batch * 100, batch * 100 + 100)
        ]
        for batch in range(10)
    ]
    sent = sum(map(len, batches))
    ready = threading.Event()
    try:
        with running(collector.run, threading.Event(), ready):
            assert ready.wait(10), "the collector did not start (queue declared differently?)"
            for meters in batches:
                notifier.sample({}, event_type="metering", payload=meters)
            deadline = time.monotonic() + 30
            while collector.stats.stored < sent and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        transport.cleanup()
    assert collector.stats.stored == sent == 1000
    assert collector.stats.dead_letters == 0
    assert store.status().samples == 1000
    store.close()
