"""Views: times as naive UTC datetimes that the JSON encoder writes as Ceilometer does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
from hypothesis import given
from hypothesis import strategies as st

from nephoscope.api.app import _json
from nephoscope.api.views import isotime, naive_utc, statistics_view
from nephoscope.storage.base import Statistic

ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11))]
)


def ceilometer_time(moment: datetime) -> str:
    """What Ceilometer writes: the UTC time, ISO 8601, no offset."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES))
def test_views_times_are_written_as_ceilometer_writes_them(moment: datetime) -> None:
    naive = naive_utc(moment)
    assert naive is not None and naive.tzinfo is None
    assert naive == moment.astimezone(UTC).replace(tzinfo=None)
    assert orjson.loads(orjson.dumps(naive)) == ceilometer_time(moment) == isotime(moment)


def test_naive_times_are_taken_as_utc() -> None:
    moment = datetime(2026, 11, 26, 12, 0, 0, 250000)
    assert naive_utc(moment) is moment
    assert isotime(moment) == "2026-11-26T12:00:00.250000"
    assert naive_utc(None) is None and isotime(None) is None


def test_json_fallback_writes_times_as_orjson_does() -> None:
    moment = datetime(2026, 11, 26, 12, 0, 0, 250000)
    # orjson refuses the big integer, so the standard encoder writes this one.
    body = json.loads(_json([{"t": moment, "n": 2**70}]).body)
    assert body == [{"t": "2026-11-26T12:00:00.250000", "n": 2**70}]
    assert json.loads(_json([{"t": moment}]).body) == [{"t": "2026-11-26T12:00:00.250000"}]


def statistic(resource: str, minute: int, groupby: dict[str, str]) -> Statistic:
    start = datetime(2026, 11, 26, 12, minute, tzinfo=UTC)
    return Statistic(
        unit="ns",
        count=2,
        min=1.0,
        max=3.0,
        sum=4.0,
        avg=2.0,
        duration_start=start + timedelta(seconds=1.5),
        duration_end=start + timedelta(seconds=30),
        period=60,
        period_start=start,
        period_end=start + timedelta(minutes=1),
        groupby=groupby,
    )


def test_statistics_view_names_each_group_as_asked() -> None:
    vm1, vm2 = {"resource_id": "vm1"}, {"resource_id": "vm2"}
    # Statistics of one group share its mapping; one group here has an equal copy.
    stats = [
        statistic("vm1", 0, vm1),
        statistic("vm2", 0, vm2),
        statistic("vm1", 1, vm1),
        statistic("vm2", 1, dict(vm2)),
    ]
    made = statistics_view(stats, {"resource_id": "resource"}, False)
    # Times stay datetimes, naive UTC, for the encoder to write (not text made per field).
    assert made[0]["duration_start"] == datetime(2026, 11, 26, 12, 0, 1, 500000)
    views = json.loads(_json(made).body)
    assert [(v["groupby"], v["period_start"]) for v in views] == [
        ({"resource": "vm1"}, "2026-11-26T12:00:00"),
        ({"resource": "vm2"}, "2026-11-26T12:00:00"),
        ({"resource": "vm1"}, "2026-11-26T12:01:00"),
        ({"resource": "vm2"}, "2026-11-26T12:01:00"),
    ]
    assert views[0] == {
        "avg": 2.0,
        "count": 2,
        "duration": 28.5,
        "duration_start": "2026-11-26T12:00:01.500000",
        "duration_end": "2026-11-26T12:00:30",
        "max": 3.0,
        "min": 1.0,
        "period": 60,
        "period_start": "2026-11-26T12:00:00",
        "period_end": "2026-11-26T12:01:00",
        "sum": 4.0,
        "unit": "ns",
        "groupby": {"resource": "vm1"},
        "aggregate": None,
    }
    ungrouped = statistics_view([statistic("vm1", 0, {})], {}, True)
    assert ungrouped[0]["groupby"] is None and ungrouped[0]["aggregate"] == {}
