"""Running ``nephoscope`` commands over a store made for the test."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nephoscope.cli import app
from nephoscope.config import StoreSettings
from nephoscope.counter import Counter
from nephoscope.storage import open_store


def store_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, counters: Sequence[Counter]
) -> Path:
    """A configuration file whose SQLite store holds ``counters``; the environment's
    ``NEPHOSCOPE_*`` settings are taken away, so the file alone decides."""
    for name in list(os.environ):
        if name.upper().startswith("NEPHOSCOPE_") and "BUFFER" not in name.upper():
            monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(StoreSettings(url=url))
    store.write_batch(list(counters))
    store.close()
    path = tmp_path / "nephoscope.yaml"
    path.write_text(f"store:\n  url: {url}\n", encoding="utf-8")
    return path


def run(command: str, config: Path, *args: str) -> tuple[int, str, str]:
    """Exit code, output and error output of ``nephoscope <command> --config <config> ...``."""
    result = CliRunner().invoke(app, [command, "--config", str(config), *args])
    return result.exit_code, result.stdout, result.stderr
