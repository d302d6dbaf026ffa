"""The compute agent and the collector as two processes over RabbitMQ, on libvirt's test driver.

`nephoscope agent --namespace compute` polls the fixture's instances and
publishes to a real RabbitMQ; `nephoscope collector` stores them in SQLite;
`nephoscope samples --meter cpu` then shows every instance with its project.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from tests.support import OwnBus, popen, stop_process
from tests.unit.compute.testdriver import BY_UUID, URI, require_libvirt

pytestmark = pytest.mark.integration

NEPHOSCOPE = [sys.executable, "-m", "nephoscope"]


@pytest.fixture
def config(own_bus: OwnBus, tmp_path: Path) -> Path:
    """A configuration on a bus of its own (unique exchange and topic), deleted afterwards."""
    require_libvirt()
    path = tmp_path / "nephoscope.yaml"
    path.write_text(
        f"metering_secret: compute-e2e\n"
        f"host: compute1\n"
        f"bus:\n  url: {own_bus.url}\n  exchange: {own_bus.exchange}\n  topic: {own_bus.topic}\n"
        f"store:\n  url: sqlite:///{tmp_path / 'store.db'}\n"
        f"collector:\n  batch_timeout: 0.1\n"
        f"libvirt:\n  uri: {URI}\n"
        f"compute:\n  default_project: admin\n"
        f"polling:\n  max_jitter: 0\n"
        f"  sources:\n    - name: instances\n      interval: 5\n      meters: ['*']\n",
        encoding="utf-8",
    )
    return path


def start(command: str, config: Path, *args: str) -> AbstractContextManager[subprocess.Popen[str]]:
    """The process for the block, Ctrl-C'ed (and killed if it must be) on leaving it."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEPHOSCOPE_")}
    return popen(
        [*NEPHOSCOPE, command, "--config", str(config), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> str:
    """Ctrl-C the process and return what it wrote on stderr."""
    return str(stop_process(process)[1])


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
    with start("collector", config) as collector:
        time.sleep(1)  # the collector declares the queue before the first cycle is sent
        with start("agent", config, "--namespace", "compute") as agent:
            deadline = time.monotonic() + 60
            rows: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                rows = cpu_samples(config)
                if {r["resource_id"] for r in rows} >= set(BY_UUID):
                    break
                assert agent.poll() is None, agent.communicate()[1]
                assert collector.poll() is None, collector.communicate()[1]
                time.sleep(0.5)
            agent_log = stop(agent)
        collector_log = stop(collector)
    projects = {str(r["resource_id"]): r["project_id"] for r in rows}
    assert set(projects) == set(BY_UUID), (agent_log, collector_log)
    for instance, project in projects.items():
        assert project == (BY_UUID[instance].project_id or "admin")
    assert all(r["unit"] == "ns" and r["type"] == "cumulative" for r in rows)
    assert "Traceback" not in agent_log + collector_log
