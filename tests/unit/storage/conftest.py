"""Let pytest explain failed asserts in the shared store contract, not only in test files."""

import pytest

pytest.register_assert_rewrite("tests.unit.storage.contract")
pytest.register_assert_rewrite(
    "tests.unit.storage.usage_contract", "tests.unit.storage.rates_contract"
)
