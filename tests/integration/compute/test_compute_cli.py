"""`nephoscope poll --once --namespace compute` on libvirt's test driver, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.unit.compute.testdriver import BY_UUID, CPU_TIME_NS, PLAIN, URI, require_libvirt

pytestmark = pytest.mark.integration


def test_poll_once_prints_each_instance_with_its_owner(tmp_path: Path) -> None:
    require_libvirt()
    config = tmp_path / "compute.yaml"
    config.write_text(
        f"host: compute1\n"
        f"libvirt:\n  uri: {URI}\n"
        f"compute:\n  default_project: admin\n"
        f"polling:\n  sources:\n    - name: try\n      interval: 60\n"
        f"      meters: ['cpu', 'instance']\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("NEPHOSCOPE_")}
    command = ["poll", "--once", "--namespace", "compute", "--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-m", "nephoscope", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    cpu = {r["resource_id"]: r for r in rows if r["name"] == "cpu"}
    assert set(cpu) == set(BY_UUID)
    for uuid, row in cpu.items():
        expected = BY_UUID[uuid]
        assert (row["type"], row["unit"], row["volume"]) == ("cumulative", "ns", CPU_TIME_NS)
        assert row["project_id"] == (expected.project_id or "admin")
        assert row["user_id"] == expected.user_id
        assert row["resource_metadata"]["display_name"] == expected.display_name
        assert row["source_name"] == "try"
    assert {r["resource_id"] for r in rows if r["name"] == "instance"} == set(BY_UUID)
    assert cpu[PLAIN.uuid]["project_id"] == "admin"
    assert "Traceback" not in result.stderr
