"""Serving processes take their start-up heap out of the garbage collector's way."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nephoscope.api.server import YOUNG_COLLECTION_THRESHOLD, ApiServer, app_from_environment
from nephoscope.cli import app
from nephoscope.config import CONFIG_ENV


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "nephoscope.yaml"
    path.write_text(
        f"store: {{url: 'sqlite:///{tmp_path / 'store.db'}'}}\napi: {{auth: none}}\n",
        encoding="utf-8",
    )
    threshold = gc.get_threshold()
    gc.unfreeze()
    yield path
    # The rest of the test session collects as before.
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_each_worker_freezes_its_heap_once_its_app_is_built(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(config))
    assert gc.get_freeze_count() == 0
    app_from_environment()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == YOUNG_COLLECTION_THRESHOLD


def test_nephoscope_api_freezes_its_heap_before_serving(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_when_served: list[int] = []
    monkeypatch.setattr(
        ApiServer, "serve", lambda self: frozen_when_served.append(gc.get_freeze_count())
    )
    result = CliRunner().invoke(app, ["api", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert len(frozen_when_served) == 1 and frozen_when_served[0] > 0
