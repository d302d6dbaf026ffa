"""Notification benchmark: RabbitMQ -> notification listener -> counters handed to the publisher.

Preloads ``compute.instance.exists`` notifications (oslo.messaging v2 envelopes,
legacy Nova payloads of many instances, projects and flavors) into the queue
``<topic>.info`` of a fresh exchange on a live RabbitMQ, then times the
listener draining them: decoding, the ``instance`` plugin and the shipped
definitions, counter ids, signing, and acknowledgement after each batch was
handed to ``Publisher.publish``. The publisher's sink discards what it is
given, to time the listener and not the metering bus (``bench/ingest.py``
times the bus and the collector). Prints notifications/s and samples/s per
run and over the runs, and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kombu import Connection, Producer

from nephoscope.config import Settings
from nephoscope.messaging.envelope import OSLO_MESSAGE, OSLO_VERSION
from nephoscope.messaging.publisher import Publisher
from nephoscope.notification import build_processor
from nephoscope.notification.listener import NotificationListener

RESULTS = Path(__file__).resolve().parent / "results"
FLAVORS = [("m1.tiny", 1, 512, 1), ("m1.small", 2, 2048, 20), ("m1.medium", 3, 4096, 40)]


class NullSink:
    """A publisher sink that takes every batch and keeps nothing."""

    safe_url = "null sink"

    def __init__(self) -> None:
        self.messages = 0
        #: perf_counter() of the last batch taken: the listener acknowledges right after.
        self.last = 0.0

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        self.messages += len(messages)
        self.last = time.perf_counter()

    def close(self) -> None:
        pass


def exists_body(index: int, audit_end: datetime) -> bytes:
    """One ``compute.instance.exists`` as nova-compute's periodic audit sends it."""
    flavor, flavor_id, memory, disk = FLAVORS[index % len(FLAVORS)]
    instance = str(uuid.UUID(int=index + 1))
    project = f"{index % 97:032x}"
    user = f"{index % 389:032x}"
    message = {
        "_context_is_admin": True,
        "_context_project_id": None,
        "_context_request_id": f"req-{uuid.UUID(int=index + 10**9)}",
        "_context_roles": ["admin"],
        "_context_timestamp": audit_end.isoformat(),
        "_context_user_id": None,
        "_unique_id": uuid.UUID(int=index + 2 * 10**9).hex,
        "event_type": "compute.instance.exists",
        "message_id": str(uuid.UUID(int=index + 3 * 10**9)),
        "priority": "INFO",
        "publisher_id": f"compute.compute-{index % 40}",
        "timestamp": (audit_end + timedelta(microseconds=index)).isoformat(sep=" "),
        "payload": {
            "tenant_id": project,
            "user_id": user,
            "instance_id": instance,
            "display_name": f"vm-{index}",
            "hostname": f"vm-{index}",
            "reservation_id": f"r-{index:08x}",
            "instance_type": flavor,
            "instance_type_id": flavor_id,
            "instance_flavor_id": str(flavor_id),
            "memory_mb": memory,
            "vcpus": flavor_id,
            "root_gb": disk,
            "ephemeral_gb": 0,
            "disk_gb": disk,
            "host": f"compute-{index % 40}",
            "node": f"compute-{index % 40}.example.org",
            "availability_zone": "nova",
            "architecture": "x86_64",
            "os_type": None,
            "state": "active",
            "state_description": "",
            "image_ref_url": "http://controller-1:9292/images/c1a9b3e2-7d44-4f0a-9a61-1f2e3d4c5b6a",
            "image_meta": {"base_image_ref": "c1a9b3e2-7d44-4f0a-9a61-1f2e3d4c5b6a"},
            "metadata": {},
            "created_at": "2026-11-01 08:00:00+00:00",
            "launched_at": "2026-11-01T08:00:20.000000",
            "deleted_at": "",
            "terminated_at": "",
            "audit_period_beginning": (audit_end - timedelta(hours=1)).isoformat(),
            "audit_period_ending": audit_end.isoformat(),
            "bandwidth": {},
            "access_ip_v4": None,
            "access_ip_v6": None,
            "progress": "",
            "kernel_id": "",
            "ramdisk_id": "",
            "cell_name": "",
        },
    }
    return json.dumps({OSLO_VERSION: "2.0", OSLO_MESSAGE: json.dumps(message)}).encode()


def preload(settings: Settings, listener: NotificationListener, bodies: list[bytes]) -> None:
    ns = settings.notifications
    queue_name = f"{ns.topics[0]}.info"
    with Connection(ns.url) as conn:
        channel = conn.channel()
        for queue in listener.queues:
            queue.bind(channel).declare()
        (exchange,) = {b.exchange for q in listener.queues for b in q.bindings}
        producer = Producer(channel, exchange=exchange)
        for body in bodies:
            producer.publish(
                body,
                routing_key=queue_name,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
            )
        deadline = time.monotonic() + 60
        while channel.queue_declare(queue_name, passive=True).message_count < len(bodies):
            if time.monotonic() > deadline:
                raise RuntimeError("the broker did not take the preload")
            time.sleep(0.05)


def cleanup(settings: Settings, listener: NotificationListener) -> None:
    with Connection(settings.notifications.url) as conn:
        channel = conn.channel()
        for queue in listener.queues:
            channel.queue_delete(queue.name)
            channel.queue_delete(queue.name + settings.notifications.dead_letter_suffix)
        for target in listener.targets:
            channel.exchange_delete(target.exchange)


def one_run(url: str, count: int, prefetch: int) -> dict[str, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        metering_secret="bench-secret",
        notifications={
            "url": url,
            "exchanges": [name],
            "topics": [name],
            "prefetch": prefetch,
            "priorities": ["info"],
            # The last partial batch waits this long before it is published.
            "batch_timeout": 0.05,
        },
    )
    sink = NullSink()
    publisher = Publisher(settings, sink)
    listener = NotificationListener(settings, build_processor(settings), publisher)
    audit_end = datetime(2026, 11, 26, 12, tzinfo=UTC)
    bodies = [exists_body(i, audit_end) for i in range(count)]
    try:
        preload(settings, listener, bodies)
        stop = threading.Event()
        thread = threading.Thread(target=listener.run, args=(stop,))
        began = time.perf_counter()
        thread.start()
        stats = listener.stats
        # Poll seldom: a thread that wakes often takes the GIL from the listener.
        while stats.metered + stats.dead_lettered < count:
            if not thread.is_alive():
                raise RuntimeError("the listener died")
            time.sleep(0.05)
        ended = sink.last
        stop.set()
        thread.join(30)
        if stats.metered != count or stats.dead_lettered:
            raise RuntimeError(f"{stats.metered} metered, {stats.dead_lettered} dead-lettered")
        if sink.messages != stats.counters:
            raise RuntimeError(f"{sink.messages} samples published of {stats.counters}")
    finally:
        publisher.close()
        cleanup(settings, listener)
    seconds = ended - began
    return {
        "seconds": seconds,
        "notifications_per_second": count / seconds,
        "samples_per_second": stats.counters / seconds,
        "samples_per_notification": stats.counters / count,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", default=os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    )
    parser.add_argument("--notifications", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=256)
    args = parser.parse_args()

    runs = []
    for index in range(args.runs):
        result = one_run(args.url, args.notifications, args.prefetch)
        runs.append(result)
        print(
            f"run {index + 1}: {result['notifications_per_second']:,.0f} notifications/s, "
            f"{result['samples_per_second']:,.0f} samples/s ({result['seconds']:.2f}s)"
        )
    nps = spread([r["notifications_per_second"] for r in runs])
    sps = spread([r["samples_per_second"] for r in runs])
    summary = {
        "benchmark": "notifications",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "notifications": args.notifications,
        "event_type": "compute.instance.exists",
        "envelope": "oslo.messaging v2",
        "prefetch": args.prefetch,
        "publisher_sink": "null (counters signed, then discarded)",
        "runs": runs,
        "notifications_per_second": nps,
        "samples_per_second": sps,
        "targets": {"notifications_per_second": 10_000},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"notifications-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(
        f"notifications: median {nps['median']:,.0f}/s (min {nps['min']:,.0f}, max "
        f"{nps['max']:,.0f}, stdev {nps['stdev']:,.0f}); samples median {sps['median']:,.0f}/s "
        f"over {args.runs} runs of {args.notifications:,}; written to {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
