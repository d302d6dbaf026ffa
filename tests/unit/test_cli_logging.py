"""What the commands write on standard error away from a terminal: one line per
log record and per error, the daemons' start and stop lines; rich at a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from nephoscope import cli

RECORD_START = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_logging_and_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The commands configure the root logger; leave it as the test found it.
    for name in list(os.environ):
        if name.upper().startswith("NEPHOSCOPE_") and "BUFFER" not in name.upper():
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_long_error_is_one_line_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    folder = tmp_path
    for n in range(6):  # a config path far wider than any terminal
        folder = folder / f"a-rather-long-directory-name-number-{n}-of-a-deep-tree-{'x' * 40}"
    folder.mkdir(parents=True)
    config = folder / "bad.yaml"
    config.write_text("bus:\n  urll: x\n", encoding="utf-8")
    result = CliRunner().invoke(
        cli.app, ["samples", "--config", str(config)], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 2
    assert result.stderr == f"error: bad configuration: {config}: bus.urll: unknown key\n"


def test_an_error_with_line_breaks_stays_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with pytest.raises(typer.Exit):
        cli.fail("first\nsecond")
    assert sys.stderr.getvalue() == "error: first\\nsecond\n"


def test_an_error_at_a_terminal_is_drawn_by_rich_brackets_and_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with pytest.raises(typer.Exit):
        cli.fail("polling.yaml: see [bold]sources[/bold]")
    assert "error:" in terminal.getvalue()
    assert "polling.yaml: see [bold]sources[/bold]" in terminal.getvalue()


def test_settings_from_logs_as_log_format_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "nephoscope.yaml"
    config.write_text("log_format: json\nlog_level: DEBUG\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    cli.settings_from(config)
    logging.getLogger("nephoscope.test").debug("two\nlines")
    (line,) = sys.stderr.getvalue().splitlines()
    record = json.loads(line)
    assert (record["level"], record["logger"], record["message"]) == (
        "DEBUG",
        "nephoscope.test",
        "two\nlines",
    )


def test_a_signal_is_logged(monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    installed: dict[int, Any] = {}
    monkeypatch.setattr(
        signal, "signal", lambda signum, handler: installed.update({signum: handler})
    )
    stop = threading.Event()
    cli._stop_on_signals(stop)
    with caplog.at_level(logging.INFO, logger="nephoscope"):
        installed[signal.SIGTERM](signal.SIGTERM, None)
    assert stop.is_set()
    assert [r.getMessage() for r in caplog.records] == [
        "SIGTERM: stopping, flushing what is in flight..."
    ]


@pytest.mark.parametrize(
    ("command", "stopped"),
    [
        ("collector", "collector stopped: stored=0, duplicates=0, dead_letters=0, batches=0"),
        ("agent", "agent stopped: cycles=0, counters_published=0, publish_failures=0"),
    ],
)
def test_a_daemon_logs_one_start_line_and_one_stop_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, stopped: str
) -> None:
    config = tmp_path / "nephoscope.yaml"
    config.write_text(
        "metering_secret: s3cr3t-value\n"
        f"store: {{url: 'sqlite:///{tmp_path / 'store.db'}'}}\n"
        "collector: {batch_size: 10}\n"
        "notifications: {url: 'amqp://nephoscope:hunter2@rabbit//'}\n",
        encoding="utf-8",
    )
    # Stopped as soon as it runs, as by a SIGTERM at once.
    monkeypatch.setattr(cli, "_stop_on_signals", lambda stop: stop.set())
    result = CliRunner().invoke(cli.app, [command, "--config", str(config)])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert all(re.match(RECORD_START, line) for line in lines), lines
    (start,) = [line for line in lines if f"INFO nephoscope: {command} starting: " in line]
    (stop,) = [line for line in lines if f"INFO nephoscope: {command} stopped" in line]
    assert "s3cr3t" not in result.stderr and "hunter2" not in result.stderr
    assert "bus memory://" in start
    changed = start.split("; changed settings: ")[1].split(", ")
    assert {
        "metering_secret=<set>",
        "collector.batch_size=10",
        f"store.url=sqlite:///{tmp_path / 'store.db'}",
        "notifications.url=amqp://nephoscope:**@rabbit//",
    } <= set(changed)
    assert stopped in stop


def test_the_api_logs_its_stop_line_when_uvicorn_raises_the_signal_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nephoscope.api.server import ApiServer

    config = tmp_path / "nephoscope.yaml"
    config.write_text(
        f"store: {{url: 'sqlite:///{tmp_path / 'store.db'}'}}\napi: {{auth: none}}\n",
        encoding="utf-8",
    )
    monkeypatch.setattr("nephoscope.api.server.settle_heap", lambda: None)
    before = signal.getsignal(signal.SIGTERM)

    def serve(self: ApiServer) -> None:
        # As uvicorn does once stopped by SIGTERM; never with the default handler,
        # which would end the test run.
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, before)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(ApiServer, "serve", serve)
    result = CliRunner().invoke(cli.app, ["api", "--config", str(config)])
    assert result.exit_code == 0, result.stderr
    assert signal.getsignal(signal.SIGTERM) == before
    lines = result.stderr.splitlines()
    assert all(re.match(RECORD_START, line) for line in lines), lines
    assert [line.split(" ", 1)[1] for line in lines[-2:]] == [
        "INFO nephoscope: SIGTERM: stopping",
        "INFO nephoscope: api stopped",
    ]
    assert sum(" INFO nephoscope: api starting: version " in line for line in lines) == 1
