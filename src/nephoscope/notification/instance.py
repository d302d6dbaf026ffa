"""The seed's notification plugin: what Nova says about an instance, as counters.

Nova's legacy (unversioned) notifications ``compute.instance.create.end``,
``compute.instance.exists`` (the periodic audit) and
``compute.instance.delete.start`` carry the instance's flavor and owner. Each
gives six gauges for the instance: ``instance``, ``memory``, ``vcpus``,
``disk.root.size``, ``disk.ephemeral.size`` and ``instance:<flavor name>``.
These meters belong to this plugin: the shipped definitions leave them out, so a
notification never yields one of them twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

from nephoscope.counter import TYPE_GAUGE, Counter
from nephoscope.notification.common import parse_timestamp, stable_counter_id, to_number
from nephoscope.plugin import NotificationBase

__all__ = ["InstanceNotifications"]

#: Resource metadata: Ceilometer's instance metadata keys (its meters.yaml
#: ``instance_meta``) -> the Nova payload key they come from. Kept small: every
#: key is signed with every counter, six counters a notification.
_METADATA_KEYS: Final = (
    ("host", "host"),
    ("flavor_id", "instance_flavor_id"),
    ("flavor_name", "instance_type"),
    ("display_name", "display_name"),
    ("state", "state"),
    ("availability_zone", "availability_zone"),
    ("launched_at", "launched_at"),
    ("created_at", "created_at"),
    ("deleted_at", "deleted_at"),
)
#: (meter, unit, payload key of its volume)
_SIZES: Final = (
    ("memory", "MB", "memory_mb"),
    ("vcpus", "vcpu", "vcpus"),
    ("disk.root.size", "GB", "root_gb"),
    ("disk.ephemeral.size", "GB", "ephemeral_gb"),
)


class InstanceNotifications(NotificationBase):
    """Six gauges per instance each time Nova reports on it."""

    #: Every meter this plugin emits; ``instance:<flavor name>`` stands for the flavor meters.
    meters: ClassVar[tuple[str, ...]] = (
        "instance",
        "memory",
        "vcpus",
        "disk.root.size",
        "disk.ephemeral.size",
        "instance:<flavor name>",
    )

    def get_event_types(self) -> list[str]:
        return [
            "compute.instance.create.end",
            "compute.instance.exists",
            "compute.instance.delete.start",
        ]

    def process_notification(self, message: Mapping[str, Any]) -> Iterator[Counter]:
        payload = message["payload"]
        if not isinstance(payload, Mapping):
            raise ValueError("payload is not an object")
        stamp = message.get("timestamp")
        when = parse_timestamp(stamp) if stamp is not None else datetime.now(UTC)
        instance = payload["instance_id"]
        user_id = payload.get("user_id")
        project_id = payload.get("tenant_id")
        metadata: dict[str, Any] = {"event_type": message.get("event_type")}
        for key, source in _METADATA_KEYS:
            if source in payload and type(payload[source]) in _SCALARS:
                metadata[key] = payload[source]
        image = payload.get("image_meta")
        if isinstance(image, Mapping) and isinstance(image.get("base_image_ref"), str):
            metadata["image_ref"] = image["base_image_ref"]
        flavor = payload.get("instance_type")
        notification_id = message.get("message_id")
        if not isinstance(notification_id, str) or not notification_id:
            notification_id = None

        def gauge(name: str, unit: str, volume: int | float) -> Counter:
            # The id the notification agent would give, given here to spare it a copy
            # of each counter (the agent's busiest path is this plugin's events).
            return Counter(
                name=name,
                type=TYPE_GAUGE,
                unit=unit,
                volume=volume,
                user_id=user_id,
                project_id=project_id,
                resource_id=instance,
                timestamp=when,
                resource_metadata=metadata,
                id=(
                    stable_counter_id(notification_id, when, name, instance)
                    if notification_id is not None and isinstance(instance, str)
                    else None
                ),
            )

        # Read every volume before yielding any: a bad one rejects the notification
        # whole instead of leaving half of its counters published.
        sizes = [(name, unit, to_number(payload[key])) for name, unit, key in _SIZES]
        yield gauge("instance", "instance", 1)
        for name, unit, volume in sizes:
            yield gauge(name, unit, volume)
        if isinstance(flavor, str) and flavor:
            yield gauge(f"instance:{flavor}", "instance", 1)


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
