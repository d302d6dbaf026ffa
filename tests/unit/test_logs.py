"""Log records: one line each away from a terminal (text or JSON), rich at one;
the start line shows what was configured without a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.logging import RichHandler

from nephoscope import __version__, logs
from nephoscope.config import Settings

#: The start of a text record: UTC time with milliseconds, level, logger.
RECORD = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) \S+: ")


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("nephoscope.test_logs")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    log.handlers.clear()
    log.propagate = True
    log.setLevel(logging.NOTSET)


def written(logger: logging.Logger, fmt: logs.LogFormat, stream: io.StringIO) -> list[str]:
    """What ``logger`` writes through ``logs.handler`` of a multi-line message and
    an exception, line by line (split as str.splitlines does)."""
    logger.addHandler(logs.handler(fmt, stream))
    logger.warning("first line\nsecond line\r\nthird\u2028fourth %s", "arg")
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("it failed")
    return stream.getvalue().splitlines()


def test_a_text_record_is_one_line_with_time_level_logger(logger: logging.Logger) -> None:
    warning, error = written(logger, "text", io.StringIO())
    assert RECORD.match(warning) and RECORD.match(error)
    assert warning.endswith(
        "WARNING nephoscope.test_logs: first line\\nsecond line\\r\\nthird\\u2028fourth arg"
    )
    assert " ERROR nephoscope.test_logs: it failed\\nTraceback (most recent call last):\\n" in error
    assert error.endswith("ValueError: bad\\nvalue")


def test_the_time_is_utc_iso_8601_with_milliseconds() -> None:
    moment = datetime(2026, 12, 4, 18, 30, 0, 123_000, tzinfo=UTC).timestamp()
    record = logging.makeLogRecord(
        {
            "name": "nephoscope.collector.service",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "message",
            "created": moment,
            "msecs": 123.0,
        }
    )
    assert (
        logs.LineFormatter().format(record)
        == "2026-12-04T18:30:00.123Z WARNING nephoscope.collector.service: message"
    )


def test_a_json_record_is_one_object_per_line(logger: logging.Logger) -> None:
    warning, error = (json.loads(line) for line in written(logger, "json", io.StringIO()))
    assert warning["level"] == "WARNING" and warning["logger"] == "nephoscope.test_logs"
    assert warning["message"] == "first line\nsecond line\r\nthird\u2028fourth arg"
    assert RECORD.match(f"{warning['time']} INFO x: ")
    assert "exc" not in warning
    assert error["message"] == "it failed"
    assert error["exc"].startswith("Traceback (most recent call last):\n")
    assert error["exc"].endswith("ValueError: bad\nvalue")


def test_a_json_record_survives_a_lone_surrogate(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(logs.handler("json", stream))
    name = os.fsdecode(b"caf\xe9.yaml")  # not UTF-8: surrogate-escaped
    logger.error("cannot read %s", name)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == f"cannot read {name}"


def test_rich_draws_records_at_a_terminal(logger: logging.Logger) -> None:
    terminal = Terminal()
    chosen = logs.handler("json", terminal)
    assert isinstance(chosen, RichHandler)
    logger.addHandler(chosen)
    logger.warning("for people")
    assert "nephoscope.test_logs: for people" in terminal.getvalue()
    assert not isinstance(logs.handler("text", io.StringIO()), RichHandler)


def test_the_default_handler_writes_to_stderr_as_it_is_now(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    logger.addHandler(logs.handler("text"))
    later = io.StringIO()
    monkeypatch.setattr(sys, "stderr", later)  # as typer's test runner does
    logger.info("here")
    assert later.getvalue().endswith("INFO nephoscope.test_logs: here\n")


def test_configure_replaces_the_root_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    try:
        logs.configure("WARNING", "json")
        (only,) = root.handlers
        assert isinstance(only.formatter, logs.JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://nephoscope:hunter2@rabbit:5672//", "amqp://nephoscope:**@rabbit:5672//"),
        ("amqp://a:hunter2@h1//;amqp://b:hunter3@h2//", "amqp://a:**@h1//;amqp://b:**@h2//"),
        ("postgresql+psycopg://u:hun%40ter2@db/n", "postgresql+psycopg://u:**@db/n"),
        (
            "postgresql://db/n?sslmode=require&password=hunter2",
            "postgresql://db/n?sslmode=require&password=**",
        ),
        ("sqlite:////var/lib/nephoscope/store.db", "sqlite:////var/lib/nephoscope/store.db"),
        ("memory://", "memory://"),
        ("amqp://guest@rabbit:5672//", "amqp://guest@rabbit:5672//"),
    ],
)
def test_safe_url_hides_passwords(url: str, shown: str) -> None:
    assert logs.safe_url(url) == shown


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("NEPHOSCOPE_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_environment")
def test_defaults_change_nothing() -> None:
    assert logs.changed_settings(Settings()) == []
    assert logs.start_message("agent", Settings(), bus="memory://") == (
        f"agent starting: version {__version__}, bus memory://; changed settings: none"
    )


@pytest.mark.usefixtures("clean_environment")
def test_start_line_lists_changed_settings_and_no_secret(tmp_path: Path) -> None:
    settings = Settings(
        metering_secret="s3cr3t-value",
        host="node7",
        bus={"url": "amqp://nephoscope:hunter2@rabbit:5672//"},
        store={
            "url": "postgresql+psycopg://nephoscope:hunter3@db/nephoscope",
            "retention": {"default": "90d"},
        },
        collector={"batch_size": 10},
        api={"tokens": tmp_path / "tokens.yaml"},
        publisher={"buffer": {"path": tmp_path / "buffer.db"}},
    )
    line = logs.start_message("collector", settings, bus=settings.bus.url, store=settings.store.url)
    assert "s3cr3t" not in line and "hunter" not in line
    assert line.startswith(
        f"collector starting: version {__version__}, bus amqp://nephoscope:**@rabbit:5672//, "
        "store postgresql+psycopg://nephoscope:**@db/nephoscope; changed settings: "
    )
    assert logs.changed_settings(settings) == [
        "metering_secret=<set>",
        "host=node7",
        "bus.url=amqp://nephoscope:**@rabbit:5672//",
        f"publisher.buffer.path={tmp_path / 'buffer.db'}",
        "collector.batch_size=10",
        "store.url=postgresql+psycopg://nephoscope:**@db/nephoscope",
        "store.retention.default=P90D",
        f"api.tokens={tmp_path / 'tokens.yaml'}",
    ]
    assert "\n" not in line


@pytest.mark.usefixtures("clean_environment")
def test_an_empty_secret_is_said_to_be_empty() -> None:
    assert logs.changed_settings(Settings(metering_secret="")) == ["metering_secret=<empty>"]


def test_stop_line_names_the_counts() -> None:
    assert logs.stop_message("agent", {"cycles": 3, "publish_failures": 0}) == (
        "agent stopped: cycles=3, publish_failures=0"
    )
    assert logs.stop_message("api", {}) == "api stopped"
