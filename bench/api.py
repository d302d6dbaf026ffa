"""Query API benchmark: latency of two typical queries over a million stored samples.

Fills a store (SQLite, and PostgreSQL when reachable) with ``--samples`` samples
on ``--resources`` resources in ten projects, starts ``nephoscope api`` on it and
measures, one request at a time, p50/p99 latency of

* ``/v2/meters/cpu?limit=100`` filtered by resource, and
* ``/v2/resources`` filtered by project,

then requests/s of the first with ``--workers`` server processes and
``--clients`` concurrent clients. Prints the figures and writes them as JSON to
bench/results/. Targets (issue 7): p50 <= 10 ms, p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.storage import open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apiserver import TOKEN, serve, stop

RESULTS = Path(__file__).resolve().parent / "results"
POSTGRESQL_URL = os.environ.get(
    "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
METERS = [
    ("cpu", "cumulative", "ns"),
    ("memory.usage", "gauge", "MB"),
    ("disk.read.bytes", "cumulative", "B"),
]


def fill(url: str, samples: int, resources: int) -> float:
    """Write the samples in batches of 10,000; return the seconds it took."""
    store = open_store(Settings(store={"url": url}).store)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    began = time.perf_counter()
    batch: list[Counter] = []
    for i in range(samples):
        name, kind, unit = METERS[i % len(METERS)]
        resource = i // len(METERS) % resources
        cycle = i // (len(METERS) * resources)
        batch.append(
            Counter(
                name=name,
                type=kind,  # type: ignore[arg-type]
                unit=unit,
                volume=float(i % 997),
                user_id=f"user-{resource % 50}",
                project_id=f"project-{resource % 10}",
                resource_id=f"vm-{resource:05d}",
                timestamp=start + timedelta(seconds=60 * cycle),
                resource_metadata={
                    "flavor": {"vcpus": 1 + resource % 8},
                    "host": f"h{resource % 20}",
                },
                source="openstack",
                id=str(uuid.uuid4()),
            )
        )
        if len(batch) == 10_000:
            store.write_batch(batch)
            batch = []
    if batch:
        store.write_batch(batch)
    elapsed = time.perf_counter() - began
    store.close()
    return elapsed


def meters_path(resources: int, rng: random.Random) -> str:
    return f"/v2/meters/cpu?limit=100&q.field=resource_id&q.value=vm-{rng.randrange(resources):05d}"


def resources_path(rng: random.Random) -> str:
    return f"/v2/resources?q.field=project_id&q.value=project-{rng.randrange(10)}"


def latencies(base: str, paths: list[str]) -> dict[str, float]:
    times = []
    with httpx.Client(base_url=base, headers={"X-Auth-Token": TOKEN}, timeout=30) as client:
        for path in paths[:5]:
            client.get(path).raise_for_status()  # warm-up
        for path in paths:
            began = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - began)
            response.raise_for_status()
    times.sort()
    return {
        "requests": len(times),
        "p50_ms": round(1000 * statistics.median(times), 2),
        "p99_ms": round(1000 * times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "max_ms": round(1000 * times[-1], 2),
    }


def throughput(base: str, resources: int, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop_at = time.monotonic() + seconds

    def client_loop(index: int) -> None:
        rng = random.Random(index)
        with httpx.Client(base_url=base, headers={"X-Auth-Token": TOKEN}, timeout=30) as client:
            while time.monotonic() < stop_at:
                client.get(meters_path(resources, rng)).raise_for_status()
                done[index] += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - began)


def start(url: str, workdir: Path, workers: int) -> tuple[subprocess.Popen[str], str]:
    try:
        return serve(url, workdir, workers)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None


def bench(name: str, url: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print(
        f"{name}: storing {args.samples:,} samples on {args.resources:,} resources...", flush=True
    )
    fill_seconds = fill(url, args.samples, args.resources)
    print(f"  stored in {fill_seconds:.1f} s", flush=True)
    rng = random.Random(7)
    process, base = start(url, workdir, 1)
    try:
        meters = latencies(base, [meters_path(args.resources, rng) for _ in range(args.requests)])
        resources = latencies(base, [resources_path(rng) for _ in range(args.requests)])
    finally:
        stop(process)
    process, base = start(url, workdir, args.workers)
    try:
        rate = throughput(base, args.resources, args.clients, args.seconds)
    finally:
        stop(process)
    result = {
        "fill_seconds": round(fill_seconds, 1),
        "meters_cpu_by_resource": meters,
        "resources_by_project": resources,
        f"meters_cpu_requests_per_second_{args.workers}_workers": round(rate, 1),
    }
    for label, figures in (
        ("/v2/meters/cpu?limit=100 by resource", meters),
        ("/v2/resources by project", resources),
    ):
        print(f"  {label:<38} p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms")
    print(
        f"  {rate:.0f} requests/s with {args.workers} workers and {args.clients} clients",
        flush=True,
    )
    return result


def postgresql_database() -> tuple[str, Any] | None:
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(POSTGRESQL_URL, isolation_level="AUTOCOMMIT")
        name = f"nephoscope_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # no PostgreSQL: say so and go on
        print(f"postgresql: skipped ({type(exc).__name__}: {exc})")
        return None

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    url = sa.make_url(POSTGRESQL_URL).set(database=name).render_as_string(hide_password=False)
    return url, drop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--resources", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=500, help="timed requests per query")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    summary: dict[str, Any] = {
        "benchmark": "api",
        "when": datetime.now(UTC).isoformat(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "samples": args.samples,
        "resources": args.resources,
        "targets": {"p50_ms": 10, "p99_ms": 50},
    }
    with tempfile.TemporaryDirectory(prefix="nephoscope-bench-api-") as tmp:
        workdir = Path(tmp)
        backends = args.backends.split(",")
        if "sqlite" in backends:
            summary["sqlite"] = bench("sqlite", f"sqlite:///{workdir / 'bench.db'}", args, workdir)
        if "postgresql" in backends and (database := postgresql_database()) is not None:
            url, drop = database
            try:
                summary["postgresql"] = bench("postgresql", url, args, workdir)
            finally:
                drop()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"api-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
