"""Rates, derived meters and usage on PostgreSQL: the same contracts as on SQLite."""

from __future__ import annotations

import pytest
from tests.unit.storage.rates_contract import RatesContract
from tests.unit.storage.usage_contract import UsageContract

pytestmark = pytest.mark.integration


class TestPostgreSQLRates(RatesContract):
    @pytest.fixture
    def store_url(self, postgresql_url: str) -> str:
        return postgresql_url


class TestPostgreSQLUsage(UsageContract):
    @pytest.fixture
    def store_url(self, postgresql_url: str) -> str:
        return postgresql_url
