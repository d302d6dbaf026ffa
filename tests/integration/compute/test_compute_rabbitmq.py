"""The compute agent and the collector as two processes over RabbitMQ, on libvirt's test driver.

`nephoscope agent --namespace compute` polls the fixture's instances and
publishes to a real RabbitMQ; `nephoscope collector` stores them in SQLite;
`nephoscope samples --meter cpu` then shows every instance with its project.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection
from tests.unit.compute.testdriver import BY_UUID, URI, require_libvirt

from nephoscope.config import load_settings
from nephoscope.messaging.bus import KombuBus

pytestmark = pytest.mark.integration

NEPHOSCOPE = [sys.executable, "-m", "nephoscope"]


@pytest.fixture
def config(rabbitmq_url: str, tmp_path: Path) -> Iterator[Path]:
    """A configuration on a bus of its own (unique exchange and topic), deleted afterwards."""
    require_libvirt()
    name = f"nephoscope-compute-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "nephoscope.yaml"
    path.write_text(
        f"metering_secret: compute-e2e\n"
        f"host: compute1\n"
        f"bus:\n  url: {rabbitmq_url}\n  exchange: {name}\n  topic: {name}\n"
        f"store:\n  url: sqlite:///{tmp_path / 'store.db'}\n"
        f"collector:\n  batch_timeout: 0.1\n"
        f"libvirt:\n  uri: {URI}\n"
        f"compute:\n  default_project: admin\n"
        f"polling:\n  max_jitter: 0\n"
        f"  sources:\n    - name: instances\n      interval: 5\n      meters: ['*']\n",
        encoding="utf-8",
    )
    yield path
    bus = KombuBus(load_settings(path).bus)
    with Connection(rabbitmq_url) as conn:
        channel = conn.channel()
        bus.queue.bind(channel).delete()
        bus.exchange.bind(channel).delete()


def start(command: str, config: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEPHOSCOPE_")}
    return subprocess.Popen(
        [*NEPHOSCOPE, command, "--config", str(config), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    """Ctrl-C the process and return what it wrote on stderr."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, stderr = process.communicate()
    return stderr


def cpu_samples(config: Path) -> list[dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEPHOSCOPE_")}
    result = subprocess.run(
        [*NEPHOSCOPE, "samples", "--meter", "cpu", "--json", "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return []
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_agent_to_collector_over_rabbitmq_stores_each_instance_with_its_project(
    config: Path,
) -> None:
    collector = start("collector", config)
    agent = None
    try:
        time.sleep(1)  # the collector declares the queue before the first cycle is sent
        agent = start("agent", config, "--namespace", "compute")
        deadline = time.monotonic() + 60
        rows: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            rows = cpu_samples(config)
            if {r["resource_id"] for r in rows} >= set(BY_UUID):
                break
            assert agent.poll() is None, agent.communicate()[1]
            assert collector.poll() is None, collector.communicate()[1]
            time.sleep(0.5)
    finally:
        agent_log = stop(agent) if agent is not None else ""
        collector_log = stop(collector)
    projects = {str(r["resource_id"]): r["project_id"] for r in rows}
    assert set(projects) == set(BY_UUID), (agent_log, collector_log)
    for instance, project in projects.items():
        assert project == (BY_UUID[instance].project_id or "admin")
    assert all(r["unit"] == "ns" and r["type"] == "cumulative" for r in rows)
    assert "Traceback" not in agent_log + collector_log
