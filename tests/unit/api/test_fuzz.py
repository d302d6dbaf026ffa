"""Bad input never makes the API fail: schemathesis drives every operation of /openapi.json.

Each operation gets generated query strings, path parameters, headers and bodies
(valid and not), sent with an admin token and with a member's; the only thing
checked is that no answer is a 5xx and that every error has Ceilometer's shape.
PostgreSQL, which refuses more (NUL characters, overflowing numbers), is fuzzed too
when it is reachable.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from tests.conftest import fresh_postgresql_database

from nephoscope.api import create_app
from nephoscope.storage import open_store

from .conftest import SAMPLES, make_settings


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fuzz_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'fuzz.db'}"
        return
    with fresh_postgresql_database("nephoscope_fuzz") as url:
        yield url


@pytest.fixture(scope="module")
def fuzzed_app(fuzz_store_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    base = make_settings(Path(tmp_path_factory.mktemp("fuzz-settings")))
    app_settings = base.model_copy(
        update={"store": base.store.model_copy(update={"url": fuzz_store_url})}
    )
    store = open_store(app_settings.store)
    store.write_batch(SAMPLES)
    yield create_app(app_settings, store)
    store.close()


def test_no_5xx(fuzzed_app: Any) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9
    statuses: Counter[int] = Counter()
    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            for token in ("admin-token", "p1-token"):
                response = case.call(headers={"X-Auth-Token": token})
                statuses[response.status_code] += 1
                assert response.status_code < 500, (case.as_curl_command(), response.text)
                if response.status_code >= 400:
                    body = response.json()
                    assert isinstance(body["error_message"]["faultstring"], str), body

        try:
            check()
        except Unsatisfiable:
            # An operation with nothing to break (no parameters) has no negative cases.
            assert mode is schemathesis.GenerationMode.NEGATIVE
    # The fuzzing reached the queries, not only the validation in front of them.
    assert statuses[200] > 100 and statuses[400] > 100, statuses
