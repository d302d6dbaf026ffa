"""A live ``nephoscope api`` process for a test: started on a free port, stopped after."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
import pytest
from tests.support import popen
from tests.unit.api.conftest import SAMPLES, TOKENS

from nephoscope.config import Settings
from nephoscope.storage import open_store


def seeded_config(path: Path, port: int, secret: str) -> Path:
    """A configuration for an API on ``port`` over a SQLite store in ``path`` holding
    the unit tests' two projects (``SAMPLES``), with their token file."""
    (path / "tokens.yaml").write_text(TOKENS, encoding="utf-8")
    store_url = f"sqlite:///{path / 'store.db'}"
    config = path / "nephoscope.yaml"
    config.write_text(
        f"metering_secret: {secret}\n"
        f"store: {{url: '{store_url}'}}\n"
        f"api: {{port: {port}, tokens: '{path / 'tokens.yaml'}'}}\n",
        encoding="utf-8",
    )
    store = open_store(Settings(store={"url": store_url}).store)
    store.write_batch(SAMPLES)
    store.close()
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_api(config: Path, port: int, output: IO[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """``nephoscope api --config config`` serving on ``port``, its output to ``output``;
    fails the test if it does not answer within 30 seconds, and is always stopped."""
    with popen(
        [sys.executable, "-m", "nephoscope", "api", "--config", str(config)],
        stdout=output,
        stderr=subprocess.STDOUT,
        stop_signal=signal.SIGTERM,
        timeout=10,
    ) as server:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"nephoscope api did not start (exit status {server.poll()})")
                time.sleep(0.1)
        yield server
