"""A ``nephoscope api`` server in a child process, for the benchmarks that time HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

#: The admin token the server is given; send it as ``X-Auth-Token``.
TOKEN = "bench-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(url: str, workdir: Path, workers: int = 1) -> tuple[subprocess.Popen[str], str]:
    """Start a server over the store at ``url``; return it and its base URL once it answers.

    Raises RuntimeError, with the server's output, if it exits or does not answer in 60 s.
    """
    port = free_port()
    tokens = workdir / "tokens.yaml"
    tokens.write_text(f"{TOKEN}: {{project_id: admin, roles: [admin]}}\n", encoding="utf-8")
    config = workdir / f"api-{port}.yaml"
    config.write_text(
        f"store: {{url: '{url}'}}\napi: {{port: {port}, tokens: '{tokens}'}}\n", encoding="utf-8"
    )
    command = [sys.executable, "-m", "nephoscope", "api", "--config", str(config)]
    process = subprocess.Popen(
        [*command, "--workers", str(workers)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/v2/capabilities", headers={"X-Auth-Token": TOKEN}, timeout=2)
            return process, base
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop(process)
                output = process.stderr.read() if process.stderr else ""
                raise RuntimeError(f"nephoscope api did not start: {output}") from None
            time.sleep(0.2)


def stop(process: subprocess.Popen[str]) -> None:
    """Stop the server as Ctrl-C would, or kill it after 20 s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
