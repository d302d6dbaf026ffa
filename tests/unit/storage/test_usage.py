"""Usage per project on SQLite (the shared usage contract), and what needs no store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from tests.unit.storage.history import at
from tests.unit.storage.usage_contract import UsageContract

from nephoscope.config import parse_duration
from nephoscope.storage.usage import DEFAULT_MAX_GAP, ProjectUsage, UsageItem


class TestSQLiteUsage(UsageContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'usage.db'}"


def test_usage_as_the_api_shows_it() -> None:
    found = ProjectUsage(
        "p1",
        at("10:00"),
        at("12:00"),
        timedelta(hours=2),
        (UsageItem("instance", "instance-hour", 1.5, 2), UsageItem("cpu", "s", 620.0, 1)),
    )
    assert found.as_dict() == {
        "project_id": "p1",
        "start": "2026-03-02T10:00:00",
        "end": "2026-03-02T12:00:00",
        "max_gap": 7200.0,
        "usage": {
            "instance": {"volume": 1.5, "unit": "instance-hour", "resources": 2},
            "cpu": {"volume": 620.0, "unit": "s", "resources": 1},
        },
    }


def test_the_cli_default_max_gap_is_the_library_one() -> None:
    assert parse_duration("2h") == DEFAULT_MAX_GAP
