"""Serving processes take their start-up heap out of the garbage collector's way."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nephoscope.api.server import (
    YOUNG_COLLECTION_THRESHOLD,
    ApiServer,
    app_from_environment,
    serve_workers,
)
from nephoscope.cli import app
from nephoscope.config import CONFIG_ENV, ConfigError, Settings
from nephoscope.storage import open_store


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


def test_the_api_refuses_the_published_secret_beyond_loopback(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    exposed = Settings(api={"auth": "none", "host": "0.0.0.0"}, store={"url": store_url})
    store = open_store(exposed.store)
    try:
        with pytest.raises(ConfigError, match="metering_secret"):
            ApiServer(exposed, store)
        with pytest.raises(ConfigError, match="metering_secret"):
            serve_workers(exposed, None, 2)
        ApiServer(exposed.model_copy(update={"metering_secret": "s3cr3t"}), store)
        ApiServer(Settings(api={"auth": "none"}, store={"url": store_url}), store)
    finally:
        store.close()
