"""Nothing made from a notification is lost while RabbitMQ refuses what the agent publishes.

On a virtual host of the test's own, the notification agent's RabbitMQ user may
read and configure everything but not write to the metering exchange, so every
publish is refused (403 ACCESS_REFUSED), a refusal that lasts until an operator
changes a permission. 5,000 notifications are queued by the real
oslo.messaging notifier, the agent buffer holds 600 samples: the agent keeps
what fits, then stops consuming and leaves the rest on their queue. Once the
permission is granted and the agent restarted, every expected sample is
stored, once. (Before, the agent acknowledged all 5,000 and dropped what its
buffer could not hold.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import oslo_messaging
import pytest
from kombu import Connection
from oslo_config import cfg
from tests.support import Threads, wait_for
from tests.unit.notification.helpers import load

from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.messaging.publisher import Publisher
from nephoscope.notification import build_processor
from nephoscope.notification.listener import NotificationListener
from nephoscope.storage import open_store

pytestmark = pytest.mark.integration

NOTIFICATIONS = 5000
#: compute.instance.exists gives memory, vcpus, disk.root.size, disk.ephemeral.size,
#: instance and instance:<flavor>.
PER_NOTIFICATION = 6
EXPECTED = NOTIFICATIONS * PER_NOTIFICATION


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = shutil.which("rabbitmqctl") or "rabbitmqctl"
    return subprocess.run(
        [command, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _require_rabbitmqctl() -> None:
    if shutil.which("rabbitmqctl"):
        done = _rabbitmqctl("list_vhosts")
        if done.returncode == 0:
            return
        reason = f"rabbitmqctl cannot manage the broker: {done.stderr.strip()[:300]}"
    else:
        reason = "rabbitmqctl is not installed (it makes a virtual host and a user)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing service is a failure, not a skip)")
    pytest.skip(reason)


@dataclass
class Vhost:
    """A RabbitMQ virtual host and a user of the test's own."""

    name: str
    user: str
    password: str

    def url(self, scheme: str = "amqp") -> str:
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:5672/{self.name}"

    def permit(self, configure: str, write: str, read: str) -> None:
        done = _rabbitmqctl("set_permissions", "-p", self.name, self.user, configure, write, read)
        assert done.returncode == 0, done.stderr


@pytest.fixture
def vhost(rabbitmq_url: str) -> Iterator[Vhost]:
    _require_rabbitmqctl()
    token = uuid.uuid4().hex[:10]
    made = Vhost(f"nephoscope-backpressure-{token}", f"nephoscope-{token}", uuid.uuid4().hex)
    try:
        for args in (("add_vhost", made.name), ("add_user", made.user, made.password)):
            done = _rabbitmqctl(*args)
            assert done.returncode == 0, done.stderr
        yield made
    finally:
        _rabbitmqctl("delete_vhost", made.name)
        _rabbitmqctl("delete_user", made.user)


def depth(url: str, queue: str) -> int:
    with Connection(url, connect_timeout=10) as conn:
        return int(conn.channel().queue_declare(queue, passive=True).message_count)


def send_notifications(vhost: Vhost, exchange: str, topic: str) -> None:
    """``NOTIFICATIONS`` compute.instance.exists, as Nova's oslo.messaging notifier sends them."""
    conf = cfg.ConfigOpts()
    conf([])
    oslo_messaging.set_transport_defaults(control_exchange=exchange)
    transport = oslo_messaging.get_notification_transport(conf, url=vhost.url("rabbit"))
    try:
        notifier = oslo_messaging.Notifier(
            transport, publisher_id="compute.compute-1", driver="messagingv2", topics=[topic]
        )
        exists = load("compute.instance.exists")
        context = {"user_id": exists["_context_user_id"], "project_id": exists["_context_tenant"]}
        for _ in range(NOTIFICATIONS):
            notifier.info(context, "compute.instance.exists", exists["payload"])
    finally:
        transport.cleanup()


def nephoscope_status(settings: Settings, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``nephoscope status --json`` for ``settings``, as an operator runs it."""
    bus, buffer = settings.bus, settings.publisher.buffer
    config = tmp_path / "status.yaml"
    config.write_text(
        f"metering_secret: {settings.metering_secret}\n"
        f"bus: {{url: '{bus.url}', exchange: {bus.exchange}, topic: {bus.topic}}}\n"
        f"publisher: {{buffer: {{path: '{buffer.path}', max_samples: {buffer.max_samples}}}}}\n"
        f"store: {{url: '{settings.store.url}'}}\n"
        f"notifications: {{url: '{settings.notifications.url}',"
        f" topics: {json.dumps(settings.notifications.topics)}}}\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEPHOSCOPE_")}
    return subprocess.run(
        [sys.executable, "-m", "nephoscope", "status", "--json", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.timeout(300)
def test_a_refused_publish_leaves_notifications_queued_and_none_is_lost(
    vhost: Vhost, tmp_path: Path
) -> None:
    token = uuid.uuid4().hex[:8]
    metering_exchange, nova = f"ceilometer-{token}", f"nova-{token}"
    topic = f"notifications-{token}"
    # Everything but publishing to the metering exchange: a refusal (403) that lasts.
    vhost.permit(".*", f"^(?!{metering_exchange}$).*", ".*")
    settings = Settings(
        metering_secret="backpressure",
        bus={"url": vhost.url(), "exchange": metering_exchange, "topic": f"metering-{token}"},
        publisher={"buffer": {"path": tmp_path / "agent-buffer.db", "max_samples": 600}},
        store={"url": f"sqlite:///{tmp_path / 'store.db'}"},
        collector={"batch_timeout": 0.1},
        notifications={
            "url": vhost.url(),
            "exchanges": [nova],
            "topics": [topic],
            "batch_timeout": 0.1,
        },
    )
    queue = f"{topic}.info"
    send_notifications(vhost, nova, topic)
    assert depth(vhost.url(), queue) == NOTIFICATIONS

    processor = build_processor(settings)
    publisher = Publisher(settings)
    listener = NotificationListener(settings, processor, publisher)
    stop, ready = threading.Event(), threading.Event()
    try:
        with Threads(timeout=60) as threads:
            threads.start(listener.run, stop, ready, stop=stop)
            assert ready.wait(30), "the notification agent did not start"
            wait_for(lambda: listener.stats.paused >= 1, 60, lambda: listener.stats)
            wait_for(
                lambda: depth(vhost.url(), queue) == NOTIFICATIONS - listener.stats.metered,
                30,
                lambda: (depth(vhost.url(), queue), listener.stats),
            )
        buffered, dropped = publisher.spool.counts()
        error = publisher.spool.last_error()
    finally:
        publisher.close()
    assert dropped == 0
    assert buffered == PER_NOTIFICATION * listener.stats.metered <= 600
    assert 0 < listener.stats.metered < NOTIFICATIONS
    assert error is not None and "ACCESS_REFUSED" in error[0]
    assert "set_permissions" in error[0], "the refusal names what to change"
    refused = nephoscope_status(settings, tmp_path)
    assert refused.returncode == 1, refused.stderr
    (report,) = [json.loads(line) for line in refused.stdout.splitlines()]
    assert "ACCESS_REFUSED" in report["agent_bus_error"]
    assert report["agent_buffered"] == buffered and report["agent_dropped"] == 0

    vhost.permit(".*", ".*", ".*")

    store = open_store(settings.store)
    collector = Collector(settings, store)
    publisher = Publisher(settings)  # restarted: it sends what the last one buffered first
    listener = NotificationListener(settings, processor, publisher)
    stop = threading.Event()
    try:
        with Threads(timeout=60) as threads:
            for target in (collector.run, listener.run):
                ready = threading.Event()
                threads.start(target, stop, ready, stop=stop)
                assert ready.wait(30), f"{target} did not start"
            wait_for(
                lambda: collector.stats.stored >= EXPECTED,
                180,
                lambda: (collector.stats, listener.stats, depth(vhost.url(), queue)),
            )
        assert depth(vhost.url(), queue) == 0
        assert publisher.spool.counts() == (0, 0)
        assert publisher.spool.last_error() is None
        healed = nephoscope_status(settings, tmp_path)
        assert healed.returncode == 0, healed.stdout + healed.stderr
        assert "agent_bus_error" not in json.loads(healed.stdout)
        status = store.status()
        assert status.samples == EXPECTED, "every expected sample, each once"
        assert status.dead_letters == 0
        assert collector.stats.stored == EXPECTED
    finally:
        publisher.close()
        store.close()
