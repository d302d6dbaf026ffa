"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support import OwnBus


@pytest.fixture
def own_bus(rabbitmq_url: str) -> Iterator[OwnBus]:
    """A bus of this test's own on the live RabbitMQ: unique exchanges and topics
    (see :class:`tests.support.OwnBus`), everything declared on them deleted after."""
    bus = OwnBus(rabbitmq_url)
    try:
        yield bus
    finally:
        bus.delete()
