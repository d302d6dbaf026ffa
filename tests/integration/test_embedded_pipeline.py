"""The whole embedded path, for real: host pollsters -> publisher -> memory bus ->
collector -> SQLite, and the CLI reading it back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from tests.support import popen, running, stop_process

from nephoscope.agent import AgentManager
from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.envelope import encode_notification
from nephoscope.messaging.meter import counter_to_message
from nephoscope.messaging.publisher import Publisher
from nephoscope.storage import open_store
from nephoscope.storage.base import SampleFilter

NEPHOSCOPE = [sys.executable, "-m", "nephoscope"]


def settings_for(tmp_path: Path, **extra: object) -> Settings:
    topic = f"t{uuid.uuid4().hex[:8]}"
    return Settings(
        metering_secret="integration",
        host="testhost",
        bus={"url": "memory://", "topic": topic},
        store={"url": f"sqlite:///{tmp_path / 'store.db'}"},
        collector={"batch_timeout": 0.05},
        **extra,  # type: ignore[arg-type]
    )


def test_host_cycle_lands_in_the_store_with_bad_messages_dead_lettered(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = open_store(settings.store)
    collector = Collector(settings, store)
    ready = threading.Event()
    publisher = Publisher(settings)
    try:
        with running(collector.run, threading.Event(), ready):
            assert ready.wait(10)
            agent = AgentManager(settings, publisher)
            source = settings.polling.sources[0]
            published = agent.poll_and_publish(source)
            assert published > 10

            # A forged message and a garbage body on the same bus, between good batches.
            bus = KombuBus(settings.bus)
            forged = counter_to_message(agent.poll(source)[0], "wrong secret", str(uuid.uuid4()))
            bus.send([forged])
            bus.publish_raw(b"this is not json")
            again = agent.poll_and_publish(source)
            bus.close()
    finally:
        publisher.close()

    stored = store.samples(SampleFilter(), limit=None)
    assert len(stored) == published + again
    names = {s.name for s in stored}
    assert {"hardware.cpu.util", "hardware.memory.used", "hardware.cpu.load.1min"} <= names
    assert {s.resource_id.split(".")[0] for s in stored} == {"testhost"}
    dead = store.dead_letters()
    assert sorted(d.reason for d in dead)[0].startswith("bad signature")
    assert any(d.body == b"this is not json" for d in dead)
    status = store.status()
    assert status.samples == published + again and status.dead_letters == 2
    store.close()


def test_redelivered_batch_is_not_stored_twice(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    store = open_store(settings.store)
    collector = Collector(settings, store)
    agent = AgentManager(settings, None)
    counters = agent.poll(settings.polling.sources[0])
    messages = [
        counter_to_message(c, settings.metering_secret, str(uuid.uuid4())) for c in counters
    ]
    body = encode_notification(messages, event_type="metering", priority="SAMPLE", publisher_id="t")
    bus = KombuBus(settings.bus)
    bus.publish_raw(body)
    bus.publish_raw(body)  # as a broker does after a lost acknowledgement
    bus.close()
    with running(collector.run, threading.Event()):
        deadline = time.monotonic() + 20
        while collector.stats.stored + collector.stats.duplicates < 2 * len(messages):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    assert collector.stats.stored == len(messages)
    assert collector.stats.duplicates == len(messages)
    assert store.status().samples == len(messages)
    store.close()


def run_cli(*args: str, config: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NEPHOSCOPE_CONFIG=str(config))
    return subprocess.run(
        [*NEPHOSCOPE, *args], env=env, capture_output=True, text=True, timeout=120, check=check
    )


def write_config(tmp_path: Path, interval: float = 2) -> Path:
    config = tmp_path / "nephoscope.yaml"
    config.write_text(
        f"metering_secret: cli-test\n"
        f"host: clihost\n"
        f"store:\n  url: sqlite:///{tmp_path / 'cli.db'}\n"
        f"polling:\n  sources:\n    - name: all\n      interval: {interval}\n"
        f"      meters: ['*']\n",
        encoding="utf-8",
    )
    return config


def test_run_meters_this_host_and_ctrl_c_flushes(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = dict(os.environ, NEPHOSCOPE_CONFIG=str(config))
    with popen(
        [*NEPHOSCOPE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        deadline = time.monotonic() + 60
        rows: list[dict] = []
        while time.monotonic() < deadline and not rows:
            time.sleep(1)
            result = run_cli(
                "samples", "--meter", "hardware.cpu.util", "--json", config=config, check=False
            )
            if result.returncode == 0:
                rows = [json.loads(line) for line in result.stdout.splitlines()]
        assert rows, "no hardware.cpu.util sample within one polling interval"
        assert rows[0]["resource_id"] == "clihost" and rows[0]["unit"] == "%"
        out, err = stop_process(process)
    assert process.returncode == 0, err
    assert "metering clihost" in out and "store:" in out
    stored = int(out.rsplit("stopped: ", 1)[1].split()[0])
    status = json.loads(run_cli("status", "--json", config=config).stdout)
    assert status["samples"] == stored, "what was in flight at Ctrl-C must be stored"


def test_query_commands_print_tables_and_json(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = Settings(
        metering_secret="cli-test",
        host="clihost",
        store={"url": f"sqlite:///{tmp_path / 'cli.db'}"},
    )
    store = open_store(settings.store)
    agent = AgentManager(settings, None)
    counters = [c.with_id(str(uuid.uuid4())) for c in agent.poll(settings.polling.sources[0])]
    store.write_batch(counters)
    store.close()
    for command in (
        ["meters"],
        ["resources"],
        ["samples", "-n", "5"],
        ["statistics", "-m", "hardware.memory.used"],
        ["statistics", "-m", "hardware.memory.used", "--period", "60"],
        ["dead-letters"],
        ["status"],
    ):
        table = run_cli(*command, config=config)
        assert table.stdout.strip(), command
        as_json = run_cli(*command, "--json", config=config)
        for line in as_json.stdout.splitlines():
            orjson.loads(line)
    stats = json.loads(
        run_cli("statistics", "-m", "hardware.memory.used", "--json", config=config).stdout
    )
    assert stats["count"] == 1 and stats["unit"] == "KB"
    samples = [
        json.loads(x)
        for x in run_cli("samples", "--json", "--since", "1d", config=config).stdout.splitlines()
    ]
    assert len(samples) == min(50, len(counters))


def test_poll_once_prints_counters_without_a_store(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_cli(
        "poll", "--once", "--namespace", "host", "--config", str(config), config=config
    )
    counters = [json.loads(line) for line in result.stdout.splitlines()]
    assert {"hardware.cpu.util", "hardware.memory.total"} <= {c["name"] for c in counters}
    assert not (tmp_path / "cli.db").exists(), "poll --once must not touch the store"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bus:\n  urll: x\n", "bus.urll: unknown key"),
        ("polling:\n  sources:\n    - name: a\n      interval: 0\n", "polling.sources.0.interval"),
        ("store: [\n", "not valid YAML"),
    ],
)
def test_bad_config_is_one_clear_message_and_exit_2(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    result = run_cli("samples", "--config", str(config), config=config, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_unknown_store_scheme_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("store:\n  url: mongodb://localhost/x\n", encoding="utf-8")
    result = run_cli("samples", config=config, check=False)
    assert result.returncode == 2 and "mongodb" in result.stderr
    assert "Traceback" not in result.stderr


def test_plugins_lists_every_namespace(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    rows = [json.loads(x) for x in run_cli("plugins", "--json", config=config).stdout.splitlines()]
    loaded = {(r["namespace"], r["name"]) for r in rows if r["status"] == "loaded"}
    assert ("nephoscope.poll.host", "cpu_util") in loaded
    assert ("nephoscope.storage", "sqlite") in loaded


def test_db_expire_applies_the_retention_policy(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = Settings(
        metering_secret="cli-test",
        host="clihost",
        store={"url": f"sqlite:///{tmp_path / 'cli.db'}"},
    )
    store = open_store(settings.store)
    agent = AgentManager(settings, None)
    source = settings.polling.sources[0]
    old = [
        c.with_id(str(uuid.uuid4()))
        for c in agent.poll(source, timestamp=datetime.now(UTC) - timedelta(days=3))
    ]
    new = [c.with_id(str(uuid.uuid4())) for c in agent.poll(source)]
    store.write_batch(old + new)
    store.close()
    # Without store.retention raw samples stay (only the default policy's old rollups go).
    assert "0 sample(s) expired" in run_cli("db", "expire", config=config).stdout

    keep_two_days = tmp_path / "retention.yaml"
    keep_two_days.write_text(
        f"store:\n  url: sqlite:///{tmp_path / 'cli.db'}\n  retention:\n    default: 2d\n",
        encoding="utf-8",
    )
    result = json.loads(run_cli("db", "expire", "--json", config=keep_two_days).stdout)
    assert result == {"expired": len(old)}
    status = json.loads(run_cli("status", "--json", config=keep_two_days).stdout)
    assert status["samples"] == len(new)
