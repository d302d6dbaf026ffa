"""Store records as Ceilometer's v2 API shows them (field names, types, flattened metadata)."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from nephoscope.storage.base import MeterInfo, ResourceInfo, Statistic, StoredSample

__all__ = [
    "flatten_metadata",
    "isotime",
    "meter_view",
    "old_sample_view",
    "resource_view",
    "sample_view",
    "statistic_view",
]


def isotime(moment: datetime | None) -> str | None:
    """Ceilometer's timestamps: naive UTC ISO 8601."""
    if moment is None:
        return None
    if moment.tzinfo is UTC:
        # The store's times, already UTC: drop the "+00:00" (the cheapest way, per statistic).
        return moment.isoformat()[:-6]
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def _pairs(document: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _pairs(value, f"{name}.")
        else:
            yield name, value


def flatten_metadata(document: Mapping[str, Any]) -> dict[str, str]:
    """Nested keys dotted, values as text, as Ceilometer flattens resource metadata."""
    return {key: str(value) for key, value in _pairs(document, "") if not isinstance(value, set)}


def meter_view(meter: MeterInfo) -> dict[str, Any]:
    meter_id = base64.b64encode(f"{meter.resource_id}+{meter.name}".encode()).decode()
    return {
        "meter_id": meter_id,
        "name": meter.name,
        "type": meter.type,
        "unit": meter.unit,
        "resource_id": meter.resource_id,
        "project_id": meter.project_id,
        "user_id": meter.user_id,
        "source": meter.source,
    }


def old_sample_view(sample: StoredSample) -> dict[str, Any]:
    """A sample as ``/v2/meters/{name}`` shows it (Ceilometer's ``OldSample``)."""
    return {
        "counter_name": sample.name,
        "counter_type": sample.type,
        "counter_unit": sample.unit,
        "counter_volume": sample.volume,
        "user_id": sample.user_id,
        "project_id": sample.project_id,
        "resource_id": sample.resource_id,
        "source": sample.source,
        "timestamp": isotime(sample.timestamp),
        "recorded_at": isotime(sample.recorded_at),
        "message_id": sample.message_id,
        "resource_metadata": flatten_metadata(sample.resource_metadata),
    }


def sample_view(sample: StoredSample) -> dict[str, Any]:
    """A sample as ``/v2/samples`` shows it (Ceilometer's ``Sample``)."""
    return {
        "id": sample.message_id,
        "meter": sample.name,
        "type": sample.type,
        "unit": sample.unit,
        "volume": sample.volume,
        "user_id": sample.user_id,
        "project_id": sample.project_id,
        "resource_id": sample.resource_id,
        "source": sample.source,
        "timestamp": isotime(sample.timestamp),
        "recorded_at": isotime(sample.recorded_at),
        "metadata": flatten_metadata(sample.resource_metadata),
    }


def resource_view(resource: ResourceInfo, base_url: str) -> dict[str, Any]:
    rid = quote(resource.resource_id, safe="")
    links = [{"href": f"{base_url}/v2/resources/{rid}", "rel": "self"}]
    links.extend(
        {
            "href": f"{base_url}/v2/meters/{quote(name, safe='')}"
            f"?q.field=resource_id&q.value={rid}",
            "rel": name,
        }
        for name in resource.meters
    )
    return {
        "resource_id": resource.resource_id,
        "project_id": resource.project_id,
        "user_id": resource.user_id,
        "source": resource.source,
        "first_sample_timestamp": isotime(resource.first_sample_timestamp),
        "last_sample_timestamp": isotime(resource.last_sample_timestamp),
        "metadata": flatten_metadata(resource.metadata),
        "links": links,
    }


def statistic_view(
    stat: Statistic, groupby_names: Mapping[str, str], aggregates: bool
) -> dict[str, Any]:
    duration = (stat.duration_end - stat.duration_start).total_seconds()
    return {
        "avg": stat.avg,
        "count": stat.count,
        "duration": duration,
        "duration_start": isotime(stat.duration_start),
        "duration_end": isotime(stat.duration_end),
        "max": stat.max,
        "min": stat.min,
        "period": stat.period,
        "period_start": isotime(stat.period_start),
        "period_end": isotime(stat.period_end),
        "sum": stat.sum,
        "unit": stat.unit,
        "groupby": (
            {groupby_names[key]: value for key, value in stat.groupby.items()}
            if stat.groupby
            else None
        ),
        "aggregate": dict(stat.aggregate) if aggregates else None,
    }
