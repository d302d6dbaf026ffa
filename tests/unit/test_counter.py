import dataclasses
import inspect
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nephoscope.counter import Counter, InvalidCounter

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def make(**changes: object) -> Counter:
    fields: dict[str, object] = dict(
        name="cpu",
        type="cumulative",
        unit="ns",
        volume=1.5,
        user_id="u",
        project_id="p",
        resource_id="r",
        timestamp=NOW,
        resource_metadata={"a": 1},
        source="openstack",
    )
    fields.update(changes)
    return Counter(**fields)  # type: ignore[arg-type]


def test_valid_counter_is_immutable() -> None:
    counter = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        counter.volume = 2  # type: ignore[misc]
    assert counter.with_id("m").id == "m" and counter.id is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"type": "rate"}, "type"),
        ({"volume": float("nan")}, "volume"),
        ({"volume": float("inf")}, "volume"),
        ({"volume": None}, "volume"),
        ({"volume": "3"}, "volume"),
        ({"volume": True}, "volume"),
        ({"name": ""}, "name"),
        ({"timestamp": datetime(2026, 1, 1)}, "timestamp"),
        ({"timestamp": "2026-01-01T00:00:00Z"}, "timestamp"),
        ({"resource_id": ""}, "resource_id"),
        ({"project_id": 3}, "project_id"),
        ({"resource_metadata": [1]}, "resource_metadata"),
        ({"source": ""}, "source"),
    ],
)
def test_invalid_counters_cannot_be_built(changes: dict, field: str) -> None:
    with pytest.raises(InvalidCounter) as caught:
        make(**changes)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_timestamps_are_kept_in_utc() -> None:
    paris = timezone(timedelta(hours=1))
    counter = make(timestamp=datetime(2026, 11, 26, 13, 0, tzinfo=paris))
    assert counter.timestamp == NOW and counter.timestamp.tzinfo is UTC


def test_as_dict_is_json_ready() -> None:
    assert make().as_dict()["timestamp"] == "2026-11-26T12:00:00+00:00"


def test_meter_spells_name_type_unit_and_source_once() -> None:
    from nephoscope.counter import Meter

    used = Meter("hardware.memory.used", "gauge", "KB", source="hardware")
    counter = used.counter(42, "host1", NOW, {"host": "host1"}, project_id="p")
    assert (counter.name, counter.type, counter.unit, counter.source) == (
        "hardware.memory.used",
        "gauge",
        "KB",
        "hardware",
    )
    assert (counter.volume, counter.resource_id, counter.project_id, counter.user_id) == (
        42,
        "host1",
        "p",
        None,
    )
    assert Meter("cpu", "cumulative", "ns").counter(1, "r", NOW).resource_metadata == {}


def test_its_own_init_takes_the_fields_in_order_with_their_defaults() -> None:
    # Counter sets its slots by position (a third cheaper than dataclass's frozen
    # __init__): a field added or moved must be added to __init__ in the same place.
    names = [f.name for f in dataclasses.fields(Counter)]
    assert list(inspect.signature(Counter).parameters) == names
    positional = Counter("cpu", "gauge", "%", 1, None, "p", "r", NOW)
    assert [getattr(positional, n) for n in names] == [
        "cpu",
        "gauge",
        "%",
        1,
        None,
        "p",
        "r",
        NOW,
        {},
        "openstack",
        None,
    ]
    assert Counter("cpu", "gauge", "%", 1, None, "p", "r", NOW).resource_metadata is not (
        positional.resource_metadata
    ), "each counter gets its own empty metadata"
    assert dataclasses.replace(make(), volume=3).volume == 3
    assert make() == make() and make() != make(volume=2)
