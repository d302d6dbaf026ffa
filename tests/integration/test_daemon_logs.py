"""A real ``nephoscope run`` with its standard error in a file: every line is one
log record, from the start line to the stop line, as text or as JSON."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SECRET = "daemon-logs-secret"
RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+: ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "nephoscope.yaml"
    path.write_text(
        f"metering_secret: {SECRET}\n"
        "host: logshost\n"
        "bus: {url: 'memory://'}\n"
        f"store: {{url: 'sqlite:///{tmp_path / 'store.db'}'}}\n"
        f"api: {{auth: none, port: {free_port()}}}\n"
        "polling: {sources: [{name: all, interval: 1, meters: ['hardware.cpu.*']}]}\n",
        encoding="utf-8",
    )
    return path


def stderr_of_run(config: Path, log_format: str, stderr: Path) -> Iterator[list[str]]:
    """Start ``nephoscope run``, wait for its start line, stop it with SIGTERM; yield
    its standard error's lines. The process is killed whatever happens."""
    text = config.read_text(encoding="utf-8") + f"log_format: {log_format}\n"
    config.write_text(text, encoding="utf-8")
    with stderr.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "nephoscope", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        while "run starting: " not in stderr.read_text(encoding="utf-8"):
            assert process.poll() is None, stderr.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "no start line within 60 seconds"
            time.sleep(0.1)
        time.sleep(1.5)  # a polling cycle or two
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, stderr.read_text(encoding="utf-8")
        yield stderr.read_text(encoding="utf-8").splitlines()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def text_lines(config: Path, tmp_path: Path) -> Iterator[list[str]]:
    yield from stderr_of_run(config, "text", tmp_path / "stderr.log")


@pytest.fixture
def json_lines(config: Path, tmp_path: Path) -> Iterator[list[str]]:
    yield from stderr_of_run(config, "json", tmp_path / "stderr.log")


def test_run_writes_one_text_record_per_line(text_lines: list[str]) -> None:
    assert all(RECORD.match(line) for line in text_lines), text_lines
    starts = [line for line in text_lines if " INFO nephoscope: run starting: version " in line]
    stops = [line for line in text_lines if " INFO nephoscope: run stopped: stored=" in line]
    assert len(starts) == 1 and len(stops) == 1, text_lines
    assert "metering_secret=<set>" in starts[0] and "host=logshost" in starts[0]
    assert SECRET not in "\n".join(text_lines)
    assert text_lines.index(stops[0]) == len(text_lines) - 1


def test_run_writes_one_json_record_per_line(json_lines: list[str]) -> None:
    records = [json.loads(line) for line in json_lines]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    messages = [r["message"] for r in records if r["logger"] == "nephoscope"]
    assert sum(m.startswith("run starting: version ") for m in messages) == 1
    assert sum(m.startswith("run stopped: stored=") for m in messages) == 1
    assert SECRET not in "\n".join(json_lines)
