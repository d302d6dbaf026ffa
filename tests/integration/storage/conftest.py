"""Let pytest explain failed asserts in the shared store contract, not only in test files."""

import pytest

pytest.register_assert_rewrite("tests.unit.storage.contract")
