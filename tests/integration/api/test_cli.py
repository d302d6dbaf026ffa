"""``nephoscope run`` serves the API beside the agent and stops it on Ctrl-C;
``nephoscope api`` with ``api.auth: none`` says loudly that it asks for no token."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.integration.api.live import free_port
from tests.support import popen, stop_process

pytestmark = pytest.mark.integration

NEPHOSCOPE = [sys.executable, "-m", "nephoscope"]


def write_config(tmp_path: Path, port: int, api: str) -> Path:
    config = tmp_path / "nephoscope.yaml"
    config.write_text(
        "metering_secret: cli-test\nhost: apihost\n"
        f"store: {{url: 'sqlite:///{tmp_path / 'cli.db'}'}}\n"
        "polling: {sources: [{name: all, interval: 2, meters: ['hardware.cpu.*']}]}\n"
        f"api: {{port: {port}, {api}}}\n",
        encoding="utf-8",
    )
    return config


def test_run_serves_the_api_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    (tmp_path / "tokens.yaml").write_text(
        "secret-admin: {project_id: admin, roles: [admin]}\n", encoding="utf-8"
    )
    port = free_port()
    config = write_config(tmp_path, port, f"tokens: '{tmp_path / 'tokens.yaml'}'")
    url = f"http://127.0.0.1:{port}/v2/meters"
    with popen(
        [*NEPHOSCOPE, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    ) as process:
        deadline = time.monotonic() + 60
        meters: list[dict[str, str]] = []
        while time.monotonic() < deadline and not meters:
            time.sleep(0.5)
            try:
                response = httpx.get(url, headers={"X-Auth-Token": "secret-admin"}, timeout=2)
            except httpx.TransportError:
                continue
            assert response.status_code == 200, response.text
            meters = response.json()
        assert any(m["name"] == "hardware.cpu.util" for m in meters), meters
        assert httpx.get(url, timeout=2).status_code == 401
        out, err = stop_process(process)
    assert process.returncode == 0, err
    assert f"api:   http://127.0.0.1:{port}/v2" in out
    with pytest.raises(httpx.TransportError):
        httpx.get(url, timeout=2)


def test_run_without_tokens_meters_on_and_says_why_there_is_no_api(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), "auth: keystone-less")
    with popen(
        [*NEPHOSCOPE, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        time.sleep(3)
        out, err = stop_process(process)
    assert process.returncode == 0, err
    assert "HTTP API not served" in out + err and "api.tokens" in out + err


def test_api_without_auth_warns_loudly(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port, "auth: none")
    with popen(
        [*NEPHOSCOPE, "api", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
    ) as process:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/v2/meters", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.1)
        assert response.status_code == 200 and response.json() == []
        out, err = stop_process(process, timeout=30)
    assert "api.auth is none" in out + err


def test_api_without_a_token_file_refuses_to_start(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), "auth: keystone-less")
    result = subprocess.run(
        [*NEPHOSCOPE, "api", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "api.tokens" in result.stderr + result.stdout
