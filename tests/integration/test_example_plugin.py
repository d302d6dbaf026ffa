"""A plugin shipped as its own distribution: installed, listed, polled, stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import popen, stop_process
from tests.unit.test_meters_doc import documented

# Its fixture lets pip install take up to 300 s: past the default timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "nephoscope-example-plugin"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
NEPHOSCOPE = [sys.executable, "-m", "nephoscope"]


@pytest.fixture(scope="module")
def installed_example() -> Iterator[None]:
    subprocess.run([*PIP, "install", "--no-deps", str(EXAMPLE)], check=True, timeout=300)
    try:
        yield
    finally:
        subprocess.run(
            [*PIP, "uninstall", "-y", "nephoscope-example-plugin"], check=True, timeout=120
        )


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NEPHOSCOPE_CONFIG=str(config))
    return subprocess.run(
        [*NEPHOSCOPE, *args], env=env, capture_output=True, text=True, timeout=120, check=True
    )


def test_installed_plugin_is_listed_polled_and_stored(
    installed_example: None, tmp_path: Path
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"host: examplehost\nstore:\n  url: sqlite:///{tmp_path / 'x.db'}\n"
        "polling:\n  sources:\n    - name: uptime\n      interval: 1\n"
        "      meters: ['example.*']\n",
        encoding="utf-8",
    )
    plugins = [
        json.loads(x) for x in cli("plugins", "--json", config=config).stdout.split("\n") if x
    ]
    [row] = [p for p in plugins if p["name"] == "example_uptime"]
    assert row["status"] == "loaded" and row["namespace"] == "nephoscope.poll.host"

    [polled] = [json.loads(x) for x in cli("poll", "--once", config=config).stdout.split("\n") if x]
    doc = documented("nephoscope.poll.host", examples=True)["example.host.uptime"]
    assert (polled["name"], polled["type"], polled["unit"]) == (doc.name, doc.type, doc.unit)
    assert polled["resource_id"] == "examplehost" and polled["volume"] > 0

    env = dict(os.environ, NEPHOSCOPE_CONFIG=str(config))
    with popen(
        [*NEPHOSCOPE, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        rows: list[dict] = []
        deadline = time.monotonic() + 60
        while not rows and time.monotonic() < deadline:
            time.sleep(0.5)
            out = subprocess.run(
                [*NEPHOSCOPE, "samples", "-m", "example.host.uptime", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            rows = [json.loads(x) for x in out.stdout.splitlines()]
        stop_process(process)
    assert rows and rows[0]["resource_id"] == "examplehost"
    assert process.returncode == 0
