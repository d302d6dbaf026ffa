"""The same publisher and collector code on the live RabbitMQ: swapping the bus is
a change of ``bus.url``."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kombu import Connection
from tests.support import OwnBus, running

from nephoscope.agent import AgentManager
from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.publisher import Publisher
from nephoscope.storage import open_store

pytestmark = pytest.mark.integration


@pytest.fixture
def amqp_settings(own_bus: OwnBus, tmp_path: Path) -> Settings:
    return own_bus.settings(
        metering_secret="amqp-test",
        store={"url": f"sqlite:///{tmp_path / 'amqp.db'}"},
        collector={"batch_timeout": 0.05},
    )


def test_counters_cross_rabbitmq_into_the_store(amqp_settings: Settings) -> None:
    store = open_store(amqp_settings.store)
    now = datetime.now(UTC)
    counters = [
        Counter("hardware.cpu.util", "gauge", "%", float(i), None, "p", f"r{i % 7}", now)
        for i in range(1200)
    ]
    publisher = Publisher(amqp_settings)
    # Published before any collector runs: the durable queue must hold them.
    assert publisher.publish(counters) == 1200
    publisher.close()
    collector = Collector(amqp_settings, store)
    with running(collector.run, threading.Event()):
        deadline = time.monotonic() + 30
        while collector.stats.stored < 1200 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert collector.stats.stored == 1200
    assert store.status().samples == 1200
    assert KombuBus(amqp_settings.bus).queue_depth() == 0, "everything acknowledged"
    store.close()


def test_an_exchange_openstack_declared_otherwise_is_used_as_it_is(
    amqp_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # oslo.messaging (amqp_durable_queues = false) declared the exchange first;
    # before, our durable declaration was refused and the collector never started.
    with Connection(amqp_settings.bus.url) as conn:
        channel = conn.channel()
        channel.exchange_declare(
            amqp_settings.bus.exchange, "topic", durable=False, auto_delete=False
        )
    assert amqp_settings.bus.durable
    store = open_store(amqp_settings.store)
    collector = Collector(amqp_settings, store)
    ready = threading.Event()
    with caplog.at_level(logging.WARNING), running(collector.run, threading.Event(), ready):
        assert ready.wait(10), "the collector did not start"
    store.close()
    assert f"exchange {amqp_settings.bus.exchange!r} exists non-durable" in caplog.text


def test_agent_buffers_while_rabbitmq_is_away_and_a_restart_sends_it(
    amqp_settings: Settings,
) -> None:
    unreachable = amqp_settings.model_copy(
        update={
            "bus": amqp_settings.bus.model_copy(update={"url": "amqp://guest:guest@127.0.0.1:1//"})
        }
    )
    agent = AgentManager(unreachable, Publisher(unreachable))
    source = unreachable.polling.sources[0]
    assert agent.poll_and_publish(source) == 0
    assert agent.poll_and_publish(source) == 0, "polling goes on while the bus is away"
    assert agent.publisher is not None
    waiting, dropped = agent.publisher.spool.counts()
    assert waiting > 20 and dropped == 0
    agent.publisher.close()

    # The agent restarts with the broker back: its buffer goes first.
    publisher = Publisher(amqp_settings)
    assert publisher.flush()
    publisher.close()
    store = open_store(amqp_settings.store)
    collector = Collector(amqp_settings, store)
    with running(collector.run, threading.Event()):
        deadline = time.monotonic() + 30
        while collector.stats.stored < waiting and time.monotonic() < deadline:
            time.sleep(0.05)
    assert collector.stats.stored == waiting
    store.close()


def test_status_reports_bus_queue_buffer_and_store(amqp_settings: Settings, tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    bus = amqp_settings.bus
    config = tmp_path / "status.yaml"
    config.write_text(
        f"metering_secret: amqp-test\nbus:\n  url: '{bus.url}'\n  exchange: {bus.exchange}\n"
        f"  topic: {bus.topic}\nstore:\n  url: '{amqp_settings.store.url}'\n",
        encoding="utf-8",
    )
    publisher = Publisher(amqp_settings)
    now = datetime.now(UTC)
    publisher.publish(
        [Counter("cpu", "cumulative", "ns", i, None, "p", "r", now) for i in range(1200)]
    )  # three bus messages of 500, 500, 200
    publisher.close()

    def status(*extra_env: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, NEPHOSCOPE_CONFIG=str(config), **dict(extra_env))
        return subprocess.run(
            [sys.executable, "-m", "nephoscope", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    ok = status()
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["bus_reachable"] is True and report["queue_depth"] == 3
    assert report["store_reachable"] is True and report["samples"] == 0
    assert report["agent_buffered"] == 0 and report["agent_dropped"] == 0

    down = status(("NEPHOSCOPE_BUS__URL", "amqp://guest:guest@127.0.0.1:1//"))
    assert down.returncode == 1
    assert json.loads(down.stdout)["bus_reachable"] is False
