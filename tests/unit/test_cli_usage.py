"""`nephoscope usage`: the constructed history's usage as a table and as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit import cli_support
from tests.unit.cli_support import store_config
from tests.unit.storage.history import P1_WHOLE, history

WINDOW = ["--since", "2026-03-02T10:00:00", "--until", "2026-03-02T12:00:00"]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return store_config(tmp_path, monkeypatch, history())


def run(config: Path, *args: str) -> tuple[int, str, str]:
    return cli_support.run("usage", config, *args)


def test_usage_as_json_lines(config: Path) -> None:
    code, stdout, _ = run(config, "--project", "p1", *WINDOW, "--json")
    assert code == 0
    (line,) = stdout.splitlines()
    found = json.loads(line)
    assert found["project_id"] == "p1" and found["max_gap"] == 7200.0
    assert {
        name: (pytest.approx(item["volume"]), item["unit"], item["resources"])
        for name, item in found["usage"].items()
    } == P1_WHOLE
    code, stdout, _ = run(config, *WINDOW, "--json", "--max-gap", "10m")
    assert code == 0
    first, second = (json.loads(line) for line in stdout.splitlines())
    assert (first["project_id"], second["project_id"]) == ("p1", "p2")
    assert first["usage"]["instance"]["volume"] == pytest.approx(85 / 60)
    # Five minutes bridges none of the ten-minute polls: p2 has no usage left.
    code, stdout, _ = run(config, *WINDOW, "--json", "--max-gap", "300")
    (only,) = (json.loads(line) for line in stdout.splitlines())
    assert only["project_id"] == "p1"
    assert only["usage"]["instance"]["volume"] == pytest.approx(304 / 3600)


def test_usage_as_a_table(config: Path) -> None:
    code, stdout, _ = run(config, "-p", "p1", *WINDOW)
    assert code == 0
    assert "Usage from 2026-03-02 10:00:00 to 2026-03-02 12:00:00" in stdout
    rows = [line for line in stdout.splitlines() if "p1" in line]
    assert len(rows) == len(P1_WHOLE)
    assert any("vcpu-hour" in row and "2.16667" in row for row in rows)
    assert any("network.incoming.bytes" in row and "10,500" in row for row in rows)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--since", "2026-03-02T12:00:00", "--until", "2026-03-02T10:00:00"], "before --until"),
        ([*WINDOW, "--max-gap", "soon"], "--max-gap"),
        ([*WINDOW, "--max-gap", "0"], "above zero"),
        (["--since", "a while ago"], "--since"),
    ],
)
def test_bad_options_exit_2(config: Path, args: list[str], words: str) -> None:
    code, _, stderr = run(config, *args)
    assert code == 2 and words in stderr
