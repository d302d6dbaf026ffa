"""Ingest benchmark: counters -> publisher -> memory bus -> collector -> SQLite.

Prints samples/s end to end and bytes per stored sample, and writes the figures
as JSON to bench/results/. Counters are built before the clock starts: what is
timed is signing, the bus, verification and storage.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from nephoscope.collector import Collector
from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.messaging.publisher import Publisher
from nephoscope.storage import open_store

RESULTS = Path(__file__).resolve().parent / "results"
METERS = [
    ("hardware.cpu.util", "gauge", "%"),
    ("hardware.cpu.time", "cumulative", "ns"),
    ("hardware.memory.used", "gauge", "KB"),
    ("hardware.network.incoming.bytes", "cumulative", "B"),
    ("hardware.network.outgoing.bytes", "cumulative", "B"),
    ("hardware.disk.read.bytes", "cumulative", "B"),
    ("hardware.disk.write.bytes", "cumulative", "B"),
    ("hardware.disk.size.used", "gauge", "KB"),
]


def make_counters(count: int, resources: int) -> list[Counter]:
    # Recent, as a live collector sees them: every archive policy level is written
    # (the store skips rollup buckets older than their level keeps).
    cycles = -(-count // (len(METERS) * resources))
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60 * cycles)
    counters = []
    for i in range(count):
        name, kind, unit = METERS[i % len(METERS)]
        resource = i // len(METERS) % resources
        cycle = i // (len(METERS) * resources)
        counters.append(
            Counter(
                name=name,
                type=kind,  # type: ignore[arg-type]
                unit=unit,
                volume=float(i % 9973) * 1.5 if kind == "gauge" else i * 1000,
                user_id=None,
                project_id=f"project-{resource % 10}",
                resource_id=f"host-{resource:04d}",
                timestamp=start + timedelta(seconds=60 * cycle, microseconds=i % 1000),
                resource_metadata={"host": f"host-{resource:04d}", "os": "linux"},
                source="hardware",
            )
        )
    return counters


def one_run(
    counters: list[Counter], workdir: Path, chunk: int, rollups: bool = True
) -> dict[str, float]:
    db = workdir / f"ingest-{time.monotonic_ns()}.db"
    settings = Settings(
        metering_secret="bench-secret",
        bus={"url": "memory://", "exchange": f"bench-{db.stem}", "topic": db.stem},
        store={
            "url": f"sqlite:///{db}",
            **({} if rollups else {"archive_policy": {"default": []}}),
        },
    )
    store = open_store(settings.store)
    collector = Collector(settings, store)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop, ready))
    thread.start()
    ready.wait(10)
    publisher = Publisher(settings)
    total = len(counters)
    began = time.perf_counter()
    for start in range(0, total, chunk):
        publisher.publish(counters[start : start + chunk])
    published = time.perf_counter()
    while collector.stats.stored + collector.stats.duplicates < total:
        if not thread.is_alive():
            raise RuntimeError("collector died")
        time.sleep(0.002)
    ended = time.perf_counter()
    stop.set()
    thread.join()
    publisher.close()
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        stored = conn.exec_driver_sql("SELECT count(*) FROM samples").scalar_one()
    engine.dispose()
    store.close()
    size = db.stat().st_size + sum(
        p.stat().st_size for p in db.parent.glob(db.name + "-*") if p.exists()
    )
    if stored != total:
        raise RuntimeError(f"stored {stored} of {total}")
    return {
        "seconds": ended - began,
        "samples_per_second": total / (ended - began),
        "publish_samples_per_second": total / (published - began),
        "bytes_per_sample": size / total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=5_000, help="counters per publish call")
    parser.add_argument(
        "--no-rollups",
        action="store_true",
        help="keep no rollups (store.archive_policy.default: []), to see what they cost",
    )
    args = parser.parse_args()

    counters = make_counters(args.samples, args.resources)
    runs = []
    with tempfile.TemporaryDirectory(prefix="nephoscope-bench-") as tmp:
        for index in range(args.runs):
            result = one_run(counters, Path(tmp), args.chunk, rollups=not args.no_rollups)
            runs.append(result)
            print(
                f"run {index + 1}: {result['samples_per_second']:,.0f} samples/s end to end "
                f"({result['seconds']:.2f}s), publisher {result['publish_samples_per_second']:,.0f}"
                f"/s, {result['bytes_per_sample']:.1f} bytes/sample"
            )
    rates = [r["samples_per_second"] for r in runs]
    summary = {
        "benchmark": "ingest",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "samples": args.samples,
        "resources": args.resources,
        "rollups": not args.no_rollups,
        "runs": runs,
        "samples_per_second": {
            "median": statistics.median(rates),
            "min": min(rates),
            "max": max(rates),
        },
        "bytes_per_sample": statistics.median(r["bytes_per_sample"] for r in runs),
        "targets": {"samples_per_second": 50_000, "bytes_per_sample": 120},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ingest-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sps = summary["samples_per_second"]
    print(
        f"ingest: median {sps['median']:,.0f} samples/s (min {sps['min']:,.0f}, "
        f"max {sps['max']:,.0f}) over {args.runs} runs; "
        f"{summary['bytes_per_sample']:.1f} bytes/sample; written to {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
