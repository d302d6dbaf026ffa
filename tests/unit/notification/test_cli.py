"""`nephoscope notifications`: try definitions by hand, without a bus or a store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.unit.notification.helpers import load, v1, v2
from typer.testing import CliRunner

from nephoscope.cli import app


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("NEPHOSCOPE_") and "BUFFER" not in name.upper():
            monkeypatch.delenv(name)


def run(*args: str, stdin: bytes | None = None) -> tuple[int, list[dict[str, object]], str]:
    result = CliRunner().invoke(app, ["notifications", *args], input=stdin)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, lines, result.stderr


def test_counters_as_json_lines_and_bad_lines_by_number(tmp_path: Path) -> None:
    path = tmp_path / "notifications.jsonl"
    path.write_bytes(
        b"\n".join(
            [
                v2(load("volume.create.end")),
                b"",
                b"not json at all",
                v1(load("image.send")),
                v1(dict(load("image.send"), priority="ERROR")),
                v1({"event_type": "scheduler.select", "payload": {}}),
            ]
        )
        + b"\n"
    )
    code, counters, stderr = run(str(path))
    assert code == 0
    assert [(c["name"], c["event_type"]) for c in counters] == [
        ("volume.size", "volume.create.end"),
        ("image.download", "image.send"),
        ("image.serve", "image.send"),
    ]
    assert counters[0]["volume"] == 10 and counters[0]["unit"] == "GB"
    assert "line 3: body is not JSON" in stderr
    assert "line 5: priority error is not metered (image.send)" in stderr
    assert "line 6: no plugin or definition meters scheduler.select" in stderr
    assert "5 notification(s), 3 counter(s), 1 problem(s)" in stderr


def test_standard_input() -> None:
    code, counters, _ = run("-", stdin=v2(load("compute.instance.exists")) + b"\n")
    assert code == 0 and len(counters) == 6


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    code, _, stderr = run(str(tmp_path / "missing.jsonl"))
    assert code == 2
    assert "cannot read" in stderr


def test_a_definitions_file_to_try(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "metric:\n"
        "  - name: volume.count\n"
        "    event_type: volume.create.end\n"
        "    type: gauge\n"
        "    unit: volume\n"
        "    volume: 1\n"
        "    resource_id: $.payload.volume_id\n",
        encoding="utf-8",
    )
    path = tmp_path / "n.jsonl"
    path.write_bytes(v2(load("volume.create.end")) + b"\n")
    code, counters, _ = run(str(path), "--definitions", str(mine))
    assert code == 0
    assert sorted(str(c["name"]) for c in counters) == ["volume.count", "volume.size"]


def test_a_bad_definitions_file_stops_with_file_entry_and_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "metric:\n  - name: x\n    event_type: a\n    type: gauge\n    unit: u\n"
        "    volume: {fields: $.payload.a, plugin: mymodule.Plugin}\n"
        "    resource_id: $.payload.id\n",
        encoding="utf-8",
    )
    config = tmp_path / "c.yaml"
    config.write_text(f"notifications:\n  definitions: [{bad}]\n", encoding="utf-8")
    code, _, stderr = run("-", "--config", str(config), stdin=b"")
    assert code == 2
    flat = " ".join(stderr.split())
    assert f"bad meter definitions: {bad}: metric[0] (x): volume: plugin 'mymodule.Plugin'" in flat
