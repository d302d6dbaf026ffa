"""Log records: drawn by rich for people at a terminal, one line each everywhere else.

Whatever reads a log file (grep, journald, a log shipper) splits it into lines,
so away from a terminal a record never spans two: as text
(``2026-12-04T18:30:00.123Z WARNING nephoscope.collector.service: message``)
or as one JSON object. Also what a daemon says when it starts and stops.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, TextIO

import orjson
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.logging import RichHandler

from nephoscope import __version__

__all__ = [
    "JsonFormatter",
    "LineFormatter",
    "LogFormat",
    "LogLimiter",
    "changed_settings",
    "configure",
    "handler",
    "is_terminal",
    "one_line",
    "safe_url",
    "start_message",
    "stop_message",
]

LogFormat = Literal["text", "json"]

# Every character str.splitlines() breaks on, written as its escape (``\n`` as
# backslash, n): a reader splitting on any of them still sees one record.
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_ESCAPED = str.maketrans({c: repr(c)[1:-1] for c in _LINE_BREAKS})
# orjson escapes the control characters already; these three are legal raw in JSON.
_JSON_ESCAPED = str.maketrans({c: f"\\u{ord(c):04x}" for c in "\x85\u2028\u2029"})


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped."""
    return text.translate(_ESCAPED)


class _UtcFormatter(logging.Formatter):
    """Times in UTC, ISO 8601 with milliseconds: ``2026-12-04T18:30:00.123Z``."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


class LineFormatter(_UtcFormatter):
    """``<time> <level> <logger>: <message>``, the traceback escaped onto the same line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return one_line(super().format(record))


class JsonFormatter(_UtcFormatter):
    """One JSON object: ``time``, ``level``, ``logger``, ``message``, and ``exc`` (the
    traceback) or ``stack`` when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = record.exc_text or self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            text = orjson.dumps(entry).decode()
        except orjson.JSONEncodeError:
            # A lone surrogate (a file name that is not UTF-8): json escapes it.
            text = json.dumps(entry)
        return text.translate(_JSON_ESCAPED)


def is_terminal(stream: object) -> bool:
    """Whether ``stream`` is a terminal, not a file, a pipe or journald.

    Unlike rich's ``Console.is_terminal``, ``FORCE_COLOR`` does not make a file one.
    """
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed
        return False


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to ``sys.stderr`` as it is at each record: tests and typer's runner swap it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # handle() holds the handler's lock around emit()
        super().emit(record)


def handler(fmt: LogFormat = "text", stream: TextIO | None = None) -> logging.Handler:
    """The handler for records written to ``stream`` (default: standard error).

    At a terminal, rich draws them for people; elsewhere each is one line of
    text or of JSON, as ``fmt`` says.
    """
    target = sys.stderr if stream is None else stream
    chosen: logging.Handler
    if is_terminal(target):
        console = Console(stderr=True) if stream is None else Console(file=stream)
        chosen = RichHandler(console=console, show_path=False, rich_tracebacks=False)
        chosen.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        return chosen
    chosen = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    chosen.setFormatter(JsonFormatter() if fmt == "json" else LineFormatter())
    return chosen


def configure(level: str, fmt: LogFormat = "text") -> None:
    """Send every record at ``level`` and above to standard error through :func:`handler`."""
    logging.basicConfig(level=level, handlers=[handler(fmt)], force=True)
    # Alembic narrates every start-up at INFO; the store logs an upgrade itself.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))


# ``scheme://user:password@``, in each URL of a failover list (``amqp://...;amqp://...``),
# which kombu's maybe_sanitize_url would leave visible past the first.
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]*@")
# libpq also takes the password as a query parameter.
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)
# Settings whose value is never shown, by the last part of their key.
_SECRET_KEY = re.compile(r"secret|password|passwd", re.IGNORECASE)


def safe_url(url: str) -> str:
    """``url`` with its passwords replaced by ``**`` (``amqp://user:**@host//``)."""
    return _QUERY_PASSWORD.sub(r"\1**", _URL_PASSWORD.sub(r"\1**@", url))


def changed_settings(settings: BaseModel) -> list[str]:
    """``key=value`` for every setting that differs from its default, with dotted
    keys (``bus.url=...``); secrets show as ``<set>``, URLs without passwords."""
    defaults = {
        name: field.get_default(call_default_factory=True)
        for name, field in type(settings).model_fields.items()
    }
    return [f"{key}={_shown(key, value)}" for key, value in _differences(settings, defaults, "")]


def _differences(
    model: BaseModel, defaults: Mapping[str, Any], prefix: str
) -> Iterator[tuple[str, Any]]:
    for name in type(model).model_fields:
        value, default, key = getattr(model, name), defaults[name], prefix + name
        if isinstance(value, BaseModel) and type(value) is type(default):
            # A section's default is an instance built by validation, so defaults that
            # validators fill in (store.url, the buffer path) compare equal.
            yield from _differences(value, dict(default), key + ".")
        elif value != default:
            yield key, value


def _shown(key: str, value: Any) -> str:
    if _SECRET_KEY.search(key.rpartition(".")[2]):
        return "<set>" if value else "<empty>"
    plain = to_jsonable_python(value)
    text = plain if isinstance(plain, str) else orjson.dumps(plain).decode()
    return one_line(safe_url(text))


def start_message(service: str, settings: BaseModel, **where: str) -> str:
    """What ``service`` logs as it starts: the version, ``where`` (name and URL, say
    ``bus=...``, ``store=...``; shown without passwords) and the changed settings."""
    places = "".join(f", {name} {safe_url(url)}" for name, url in where.items())
    changed = ", ".join(changed_settings(settings)) or "none"
    return f"{service} starting: version {__version__}{places}; changed settings: {changed}"


def stop_message(service: str, counts: Mapping[str, int]) -> str:
    """What ``service`` logs as it stops: its counts, if any, as ``name=value``."""
    done = ", ".join(f"{name}={n}" for name, n in counts.items())
    return f"{service} stopped: {done}" if done else f"{service} stopped"


class LogLimiter:
    """Lets one log line through per key and interval; counts the ones held back.

    A definition that fails on every notification of a busy cloud would write
    thousands of identical lines a second; with this it writes one a minute.
    Thread-safe.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> int | None:
        """None to hold the line back, else how many lines of ``key`` were held since the last."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)
