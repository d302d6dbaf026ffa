"""The notification README's meters table says what docs/meters.md says."""

from __future__ import annotations

from pathlib import Path

from tests.unit.test_meters_doc import documented, read_tables

from nephoscope.plugin import NS_NOTIFICATION

README = Path(__file__).resolve().parents[3] / "src" / "nephoscope" / "notification" / "README.md"


def test_readme_table_matches_meters_doc() -> None:
    readme = {
        row["name"]: (row["type"], row["unit"], row["resource"], row["plugin"])
        for row in read_tables(README, ("name", "type", "unit", "resource", "plugin"))
    }
    doc = {
        name: (row.type, row.unit, row.resource, row.plugin)
        for name, row in documented(NS_NOTIFICATION).items()
    }
    assert readme == doc
