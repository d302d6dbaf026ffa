"""SQLStore on PostgreSQL: the same store contract as SQLite, against a live server."""

from __future__ import annotations

import pytest
from tests.unit.storage.contract import StoreContract

pytestmark = pytest.mark.integration


class TestPostgreSQLStore(StoreContract):
    @pytest.fixture
    def store_url(self, postgresql_url: str) -> str:
        return postgresql_url
