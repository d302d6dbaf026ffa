"""Loading plugins through real entry points: failures are recorded, never raised."""

from __future__ import annotations

import logging
import sys
import textwrap
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from nephoscope.counter import Counter
from nephoscope.plugin import (
    Manager,
    PluginUnusable,
    PollingContext,
    PollsterBase,
    load_plugin_classes,
    load_plugins,
)

MODULE = """
from nephoscope.plugin import PluginUnusable, PollsterBase


class Good(PollsterBase):
    meters = ("fake.good",)

    def get_counters(self, manager, context):
        return []


class Unusable(PollsterBase):
    meters = ("fake.unusable",)

    def __init__(self):
        raise PluginUnusable("no fake hardware here")

    def get_counters(self, manager, context):
        return []


class Broken(PollsterBase):
    def __init__(self):
        raise RuntimeError("cannot start")

    def get_counters(self, manager, context):
        return []


class NotAPollster:
    pass
"""


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[str]:
    """A distribution on sys.path whose entry points cover every way to fail."""
    name = f"nephoscope.test.{uuid.uuid4().hex[:8]}"
    module = f"fake_plugins_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(MODULE, encoding="utf-8")
    dist = tmp_path / "fake_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            f"""\
            [{name}]
            good = {module}:Good
            unusable = {module}:Unusable
            broken = {module}:Broken
            wrong = {module}:NotAPollster
            missing = {module}_nope:Nothing
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)


def test_every_failure_is_recorded_with_its_reason(
    namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        loaded = load_plugins(namespace, PollsterBase)
    assert list(loaded.plugins) == ["good"]
    assert loaded.unusable == {"unusable": "no fake hardware here"}
    assert set(loaded.failed) == {"broken", "wrong", "missing"}
    assert "failed to initialise: RuntimeError: cannot start" in loaded.failed["broken"]
    assert "not a subclass of PollsterBase" in loaded.failed["wrong"]
    assert loaded.failed["missing"].startswith("failed to import: ModuleNotFoundError")
    for name in ("broken", "wrong", "missing", "unusable"):
        assert name in caplog.text


def test_names_restrict_what_is_loaded(namespace: str) -> None:
    loaded = load_plugins(namespace, PollsterBase, names=["good"])
    assert list(loaded.plugins) == ["good"] and not loaded.failed


def test_classes_can_be_listed_without_building_them(namespace: str) -> None:
    loaded = load_plugin_classes(namespace, PollsterBase)
    assert set(loaded.plugins) == {"good", "unusable", "broken"}
    assert all(isinstance(cls, type) for cls in loaded.plugins.values())


def test_pollster_contract_is_abstract() -> None:
    class Incomplete(PollsterBase):
        pass

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]

    class Complete(PollsterBase):
        def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
            raise PluginUnusable("x")

    assert Complete().meters == ()
