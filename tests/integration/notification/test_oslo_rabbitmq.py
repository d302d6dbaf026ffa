"""Real oslo.messaging notifiers on the live RabbitMQ, our listener turning what they send
into counters that a collector stores in SQLite.

The notifications are sent before the listener starts, so the queues exist as
oslo.messaging's notifier declares them (non-durable, by default) when our
listener declares them too: a mismatch would fail with 406 PRECONDITION_FAILED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import oslo_messaging
import pytest
from kombu import Connection, Exchange, Producer
from oslo_config import cfg
from tests.support import OwnBus, Threads, popen, stop_process
from tests.unit.notification.helpers import INSTANCE, PROJECT, USER, load

from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.messaging.publisher import Publisher
from nephoscope.notification import build_processor
from nephoscope.notification.listener import HEADER_PREFIX, NotificationListener
from nephoscope.storage import open_store
from nephoscope.storage.base import SampleFilter

pytestmark = pytest.mark.integration

OSLO_URL = "rabbit://guest:guest@127.0.0.1:5672/"
NEPHOSCOPE = [sys.executable, "-m", "nephoscope"]
VOLUME = "2b6f3e91-4a7c-4d1e-9f80-6c5b4a3d2e10"


@pytest.fixture
def names(own_bus: OwnBus) -> tuple[str, str]:
    """A unique control exchange and topic, everything declared on them deleted after."""
    return own_bus.notification_exchange, own_bus.notification_topic


def notifier(exchange: str, topic: str, driver: str) -> tuple[Any, Any]:
    """An oslo.messaging notifier as a Nova configured with ``control_exchange`` would have."""
    conf = cfg.ConfigOpts()
    conf([])
    oslo_messaging.set_transport_defaults(control_exchange=exchange)
    transport = oslo_messaging.get_notification_transport(conf, url=OSLO_URL)
    return (
        oslo_messaging.Notifier(
            transport, publisher_id="compute.compute-1", driver=driver, topics=[topic]
        ),
        transport,
    )


def context() -> dict[str, Any]:
    return {"user_id": USER, "project_id": PROJECT, "user": USER, "tenant": PROJECT}


def settings_for(rabbitmq_url: str, exchange: str, topic: str, tmp_path: Path) -> Settings:
    return Settings(
        metering_secret="notifications-e2e",
        bus={"url": "memory://", "topic": f"metering-{topic}"},
        store={"url": f"sqlite:///{tmp_path / 'store.db'}"},
        collector={"batch_timeout": 0.05},
        notifications={
            "url": rabbitmq_url,
            "exchanges": [exchange],
            "topics": [topic],
            "batch_timeout": 0.05,
        },
    )


class Pipeline:
    """Listener (RabbitMQ) -> publisher -> memory bus -> collector -> SQLite, in threads,
    for the ``with`` block."""

    def __init__(self, settings: Settings) -> None:
        self.store = open_store(settings.store)
        self.collector = Collector(settings, self.store)
        self.publisher = Publisher(settings)
        self.listener = NotificationListener(settings, build_processor(settings), self.publisher)
        self._threads = Threads()

    def __enter__(self) -> Pipeline:
        stop = threading.Event()
        try:
            for target in (self.collector.run, self.listener.run):
                ready = threading.Event()
                self._threads.start(target, stop, ready, stop=stop)
                assert ready.wait(10), f"{target} did not start"
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, condition: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert condition(), (self.listener.stats, self.collector.stats)

    def close(self) -> None:
        try:
            self._threads.stop()
        finally:
            self.publisher.close()
            self.store.close()


def depth(rabbitmq_url: str, queue: str) -> int:
    with Connection(rabbitmq_url) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).message_count)


@pytest.mark.parametrize("driver", ["messagingv2", "messaging"])
def test_oslo_notifications_end_in_the_store(
    driver: str, names: tuple[str, str], rabbitmq_url: str, tmp_path: Path
) -> None:
    exchange, topic = names
    sender, transport = notifier(exchange, topic, driver)
    ctxt = context()
    for event in ("compute.instance.create.end", "compute.instance.exists"):
        sender.info(ctxt, event, load(event)["payload"])
    sender.info(ctxt, "volume.create.end", load("volume.create.end")["payload"])
    sender.info(ctxt, "image.upload", load("image.upload")["payload"])
    sender.info(ctxt, "network.create.end", load("network.create.end")["payload"])
    sender.sample(ctxt, "l3.meter", load("l3.meter")["payload"])
    sender.error(ctxt, "compute.instance.exists", load("compute.instance.exists")["payload"])
    transport.cleanup()

    with Pipeline(settings_for(rabbitmq_url, exchange, topic, tmp_path)) as pipeline:
        # 7 + 6 instance counters, volume, image, network (2) and bandwidth.
        pipeline.wait(lambda: pipeline.collector.stats.stored == 18)
        assert pipeline.listener.stats.metered == 6
        assert depth(rabbitmq_url, f"{topic}.info") == depth(rabbitmq_url, f"{topic}.sample") == 0
    store = open_store(settings_for(rabbitmq_url, exchange, topic, tmp_path).store)
    try:
        memory = store.samples(SampleFilter(meter="memory"))
        assert {(s.resource_id, s.project_id, s.user_id, s.volume) for s in memory} == {
            (INSTANCE, PROJECT, USER, 2048)
        }
        assert len(memory) == 2  # create.end and exists
        (volume,) = store.samples(SampleFilter(meter="volume.size"))
        assert (volume.resource_id, volume.volume, volume.unit) == (VOLUME, 10, "GB")
        (bandwidth,) = store.samples(SampleFilter(meter="bandwidth"))
        assert bandwidth.volume == 1048576
        assert store.samples(SampleFilter(meter="instance:m1.small"))
        assert store.status().dead_letters == 0
    finally:
        store.close()
    # The error notification was never metered, and oslo's error queue was never ours.
    assert depth(rabbitmq_url, f"{topic}.error") == 1


def test_bad_notifications_go_to_the_dead_letter_queue_with_their_reason(
    names: tuple[str, str], rabbitmq_url: str, tmp_path: Path
) -> None:
    exchange, topic = names
    sender, transport = notifier(exchange, topic, "messagingv2")
    bad_volume = dict(load("volume.create.end")["payload"], size="ten")
    sender.info(context(), "volume.create.end", bad_volume)
    sender.info(context(), "compute.instance.exists", load("compute.instance.exists")["payload"])
    transport.cleanup()
    with Connection(rabbitmq_url) as conn:
        Producer(conn.channel()).publish(
            b"<html>not json</html>",
            exchange=Exchange(exchange, type="topic", durable=False),
            routing_key=f"{topic}.info",
            content_type="text/html",
            content_encoding="utf-8",
        )

    with Pipeline(settings_for(rabbitmq_url, exchange, topic, tmp_path)) as pipeline:
        pipeline.wait(
            lambda: pipeline.listener.stats.received == 3 and pipeline.collector.stats.stored == 6
        )
        pipeline.wait(lambda: pipeline.listener.stats.dead_lettered == 2)
    assert depth(rabbitmq_url, f"{topic}.info") == 0
    letters = []
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        while (message := channel.basic_get(f"{topic}.info.dead", no_ack=True)) is not None:
            letters.append(message)
    assert len(letters) == 2
    by_event = {m.headers[f"{HEADER_PREFIX}event-type"]: m for m in letters}
    volume = by_event["volume.create.end"]
    assert "volume.size" in volume.headers[f"{HEADER_PREFIX}reason"]
    assert "'ten' is not a number" in volume.headers[f"{HEADER_PREFIX}reason"]
    assert volume.headers[f"{HEADER_PREFIX}exchange"] == exchange
    assert volume.headers[f"{HEADER_PREFIX}routing-key"] == f"{topic}.info"
    assert json.loads(volume.body)["oslo.version"] == "2.0"  # the body as it came
    html = by_event[""]
    # py-amqp gives text for a body with a content encoding: the bytes are unchanged.
    assert html.body.encode() == b"<html>not json</html>"
    assert (html.properties["content_type"], html.properties["content_encoding"]) == (
        "text/html",
        "utf-8",
    )
    assert html.headers[f"{HEADER_PREFIX}reason"].startswith("body is not JSON")


def _env() -> dict[str, str]:
    keep = {"NEPHOSCOPE_PUBLISHER__BUFFER__PATH"}
    return {
        k: v for k, v in os.environ.items() if not k.upper().startswith("NEPHOSCOPE_") or k in keep
    }


def test_run_meters_notifications_when_enabled(
    names: tuple[str, str], rabbitmq_url: str, tmp_path: Path
) -> None:
    exchange, topic = names
    config = tmp_path / "nephoscope.yaml"
    config.write_text(
        f"metering_secret: run-e2e\n"
        f"host: node1\n"
        f"bus:\n  url: 'memory://'\n  topic: metering-{topic}\n"
        f"store:\n  url: sqlite:///{tmp_path / 'store.db'}\n"
        f"collector:\n  batch_timeout: 0.1\n"
        f"polling:\n  max_jitter: 0\n"
        f"  sources:\n    - name: one\n      interval: 3600\n      meters: ['hardware.cpu.count']\n"
        f"notifications:\n  enabled: true\n  url: {rabbitmq_url}\n"
        f"  exchanges: [{exchange}]\n  topics: [{topic}]\n  batch_timeout: 0.1\n",
        encoding="utf-8",
    )
    rows: list[dict[str, Any]] = []
    with popen(
        [*NEPHOSCOPE, "run", "--config", str(config)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        sender, transport = notifier(exchange, topic, "messagingv2")
        try:
            deadline = time.monotonic() + 60
            sent = False
            while time.monotonic() < deadline and not rows:
                assert process.poll() is None, process.communicate()
                if not sent:
                    time.sleep(1)  # the listener declares its queue before Nova sends
                    sender.info(
                        context(),
                        "compute.instance.exists",
                        load("compute.instance.exists")["payload"],
                    )
                    sent = True
                result = subprocess.run(
                    [*NEPHOSCOPE, "samples", "--meter", "vcpus", "--json", "--config", str(config)],
                    env=_env(),
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                rows = [json.loads(line) for line in result.stdout.splitlines()]
                time.sleep(0.3)
        finally:
            transport.cleanup()
        stdout, stderr = stop_process(process)
    assert [(r["resource_id"], r["project_id"], r["volume"]) for r in rows] == [
        (INSTANCE, PROJECT, 1)
    ]
    assert "notifications:" in stdout, stdout
    assert "Traceback" not in stderr


def test_the_agent_uses_an_exchange_the_services_declared_otherwise(
    own_bus: OwnBus, tmp_path: Path
) -> None:
    """Before, a durable exchange (amqp_durable_queues = true) stopped the agent with 406."""
    exchange, topic = own_bus.notification_exchange, own_bus.notification_topic
    with Connection(own_bus.url) as conn:
        # As a cloud whose services set amqp_durable_queues would have declared it.
        Exchange(exchange, type="topic", durable=True).bind(conn.channel()).declare()
    config = tmp_path / "nephoscope.yaml"
    config.write_text(
        f"metering_secret: adopt\n"
        f"bus:\n  url: {own_bus.url}\n  exchange: {own_bus.exchange}\n  topic: {own_bus.topic}\n"
        f"notifications:\n  exchanges: [{exchange}]\n  topics: [{topic}]\n",
        encoding="utf-8",
    )
    log = tmp_path / "agent.log"
    with (
        log.open("w") as stderr,
        popen(
            [*NEPHOSCOPE, "notification-agent", "--config", str(config)],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        ) as process,
    ):
        deadline = time.monotonic() + 60
        while "listening for notifications" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        stop_process(process)
    said = log.read_text()
    assert process.returncode == 0, said
    assert f"exchange {exchange!r} exists durable" in said
    assert "PRECONDITION_FAILED" not in said
