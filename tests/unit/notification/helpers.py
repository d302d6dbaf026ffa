"""Recorded-style notifications (tests/fixtures/notifications) and processors to run them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nephoscope.messaging.envelope import OSLO_MESSAGE, OSLO_VERSION
from nephoscope.notification import NotificationProcessor, load_definitions
from nephoscope.notification.instance import InstanceNotifications

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "notifications"

PROJECT = "3c2b1a09f8e7d6c5b4a3928170f6e5d4"
USER = "9a1f0c7d2b8e4c3fa5d6e7f8091a2b3c"
INSTANCE = "6f1c3a52-9b7e-4d2a-8c41-0e5d7a9b1c01"


def fixture_paths() -> list[Path]:
    return sorted(FIXTURES.rglob("*.json"))


def load(name: str) -> dict[str, Any]:
    """The notification of fixture ``name`` (``compute.instance.exists``), as oslo sends it."""
    (path,) = FIXTURES.rglob(f"{name}.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def v1(message: dict[str, Any]) -> bytes:
    """oslo.messaging's driver ``messaging``: the message itself as JSON."""
    return json.dumps(message).encode()


def v2(message: dict[str, Any]) -> bytes:
    """oslo.messaging's driver ``messagingv2``: the message inside an envelope."""
    return json.dumps({OSLO_VERSION: "2.0", OSLO_MESSAGE: json.dumps(message)}).encode()


def processor(*definition_files: Path, shipped: bool = True) -> NotificationProcessor:
    """The built-in plugin and the shipped definitions (and ``definition_files``)."""
    return NotificationProcessor(
        {"instance": InstanceNotifications()},
        load_definitions(definition_files, shipped=shipped),
    )
