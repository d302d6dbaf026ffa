"""Statistics benchmark (issue 8): statistics from rollups against the raw scan, and
what keeping rollups costs at ingest.

For each backend in ``--backends`` (SQLite in a temporary file; PostgreSQL in a
fresh database on ``TEST_POSTGRESQL_URL``, dropped afterwards) it

1. fills a store with ``--samples`` samples (default 10,000,000) of ``--resources``
   instances in ``--projects`` projects over 30 days ending at the current hour:
   a cumulative ``cpu`` (ns, growing with each instance's vCPUs and load, reset now
   and then as by a reboot) and a gauge ``memory.usage`` (MB), each instance
   polled at one interval (518 s at the defaults; Ceilometer's default is 600 s),
   written with ``write_batch`` in batches of ``--batch``, as a collector does;
2. times, store-level (``store.statistics``, in a process that has frozen its
   start-up heap as the API server does), ``--repetitions`` times each on
   random instances and projects after a warm-up, p50/p90/p99 of
   (a) ``cpu`` with ``period=3600`` over the 30 days for one resource, and
   (b) the same for every resource of one project, grouped by ``resource_id``;
   then both again with ``rollups=False`` (the raw scan), for the ratio, and
   checks that both paths give the same numbers; and (a) and (b) through
   ``GET /v2/meters/cpu/statistics`` on a ``nephoscope api`` server, until the
   whole answer is received (and, reported beside it, until the client has
   parsed it);
3. times ``write_batch`` of the newest ``--ingest-samples`` samples of the same
   stream (so every level of the archive policy, the 1-minute one kept a day
   included, is live, as for a collector) into fresh stores with the default
   archive policy (or ``--ingest-policy``) and with
   ``store.archive_policy.default: []`` (no rollups),
   ``--runs`` times each, alternating (with ``--interleaved``, each batch into
   both stores in turn), and reports samples/s and the cost.

Targets (issue 8): p50 <= 50 ms, >= 50x faster than the raw scan, rollups
costing <= 30% of ingest throughput. Parts the code cannot do yet (no
``rollups`` keyword, no way to switch rollups off) are reported as not
available. Prints the figures and writes them as JSON to bench/results/.

Issue 8 names this file ``bench/statistics.py``; under that name it would shadow
the standard library's ``statistics`` module for every script in bench/ (Python
puts a script's folder first on ``sys.path``), and ``bench/ingest.py`` broke.

    .venv/bin/python bench/rollup_statistics.py                                    # full run
    .venv/bin/python bench/rollup_statistics.py --samples 200000 --resources 100   # smoke
    .venv/bin/python bench/rollup_statistics.py --no-queries --ingest-policy \
        '{"default": [{"granularity": "1h", "timespan": "90d"}, {"granularity": "1d"}]}'
                                                    # ingest cost without the 1-minute level
    .venv/bin/python bench/rollup_statistics.py --no-queries --backends sqlite --interleaved
                                                    # ingest cost, batch by batch in turn
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pydantic
import sqlalchemy as sa
from uuid_utils import uuid7

from nephoscope.api.server import settle_heap
from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.storage import SampleFilter, Statistic, Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apiserver import TOKEN, serve, stop

RESULTS = Path(__file__).resolve().parent / "results"
POSTGRESQL_URL = os.environ.get(
    "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DAYS = 30
PERIOD = 3600
METERS = 2  # cpu and memory.usage, per instance and poll
NO_ROLLUPS: dict[str, list[Any]] = {"default": []}
#: The keyword the store's statistics takes to skip the rollups (when it has it).
RAW_SCAN = {"rollups": False}
TARGETS = {"p50_ms": 50, "speedup": 50, "ingest_cost_percent": 30}


# -- the data -------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    resource_id: str
    user_id: str
    project_id: str
    metadata: dict[str, Any]
    vcpus: int
    ram_mb: int
    load: float  # typical share of its vCPUs in use
    offset: timedelta  # where in each polling interval it is polled


@dataclass(frozen=True)
class Shape:
    """What the store is filled with: instances, polling interval, time range."""

    samples: int
    instances: list[Instance]
    projects: list[str]
    start: datetime  # on the hour, DAYS before ``end``
    end: datetime  # the current hour
    cycles: int  # polls of every instance over the range
    interval_us: int

    @classmethod
    def build(cls, samples: int, resources: int, projects: int, seed: int = 8) -> Shape:
        rng = random.Random(seed)
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(days=DAYS)
        cycles = math.ceil(samples / (resources * METERS))
        interval_us = DAYS * 86_400_000_000 // cycles
        project_ids = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(projects)]
        users = [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(projects * 3)]
        flavors = [("m1.tiny", 1, 512), ("m1.small", 1, 2048), ("m1.medium", 2, 4096)]
        flavors += [("m1.large", 4, 8192), ("m1.xlarge", 8, 16384)]
        instances = []
        for index in range(resources):
            name, vcpus, ram = flavors[rng.randrange(len(flavors))]
            resource_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            metadata = {
                "display_name": f"vm-{index:05d}",
                "host": f"compute-{index % 40:02d}",
                "flavor": {"name": name, "vcpus": vcpus, "ram": ram, "disk": 20},
                "image_ref": "7b3c5a2e-1f0d-4c9e-8a6b-2d4e6f8a0c1e",
                "instance_type": name,
                "status": "active",
            }
            instances.append(
                Instance(
                    resource_id=resource_id,
                    user_id=users[index % len(users)],
                    project_id=project_ids[index % projects],
                    metadata=metadata,
                    vcpus=vcpus,
                    ram_mb=ram,
                    load=rng.uniform(0.05, 0.9),
                    offset=timedelta(microseconds=interval_us * index // resources),
                )
            )
        return cls(samples, instances, project_ids, start, end, cycles, interval_us)

    def batches(self, size: int, newest: int | None = None) -> Iterator[list[Counter]]:
        """The samples in polling order, ``size`` at a time; only the ``newest`` if given.

        Built in a tight loop: one timestamp per instance and poll, metadata shared.
        """
        count = self.samples if newest is None else min(newest, self.samples)
        first_cycle = self.cycles - math.ceil(count / (len(self.instances) * METERS))
        rng = random.Random(first_cycle)
        rand = rng.random
        # ns of CPU time so far; a reboot every ~3 weeks of polls at the defaults.
        cpu = [rng.randrange(10**9, 10**13) for _ in self.instances]
        reset_chance = 1 / 4000
        interval_s = self.interval_us / 1e6
        rows = list(enumerate(self.instances))
        batch: list[Counter] = []
        made = 0
        for cycle in range(first_cycle, self.cycles):
            base = self.start + timedelta(microseconds=cycle * self.interval_us)
            for index, inst in rows:
                at = base + inst.offset
                used = 0 if rand() < reset_chance else cpu[index]
                used += int(interval_s * 1e9 * inst.vcpus * min(1.0, inst.load * (0.5 + rand())))
                cpu[index] = used
                batch.append(
                    Counter(
                        "cpu",
                        "cumulative",
                        "ns",
                        used,
                        inst.user_id,
                        inst.project_id,
                        inst.resource_id,
                        at,
                        inst.metadata,
                        "openstack",
                        str(uuid7()),
                    )
                )
                batch.append(
                    Counter(
                        "memory.usage",
                        "gauge",
                        "MB",
                        round(inst.ram_mb * (0.3 + 0.6 * rand()), 1),
                        inst.user_id,
                        inst.project_id,
                        inst.resource_id,
                        at,
                        inst.metadata,
                        "openstack",
                        str(uuid7()),
                    )
                )
                made += 2
                if made >= count:
                    yield batch[: len(batch) - (made - count)]
                    return
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch


# -- stores ---------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """The URL of an empty database, removed afterwards."""
    if backend == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in (path, *path.parent.glob(path.name + "-*")):
                leftover.unlink(missing_ok=True)
        return
    admin = sa.create_engine(POSTGRESQL_URL, isolation_level="AUTOCOMMIT")
    name = f"nephoscope_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield sa.make_url(POSTGRESQL_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def postgresql_reachable() -> str | None:
    """None if PostgreSQL answers, else why not."""
    try:
        engine = sa.create_engine(POSTGRESQL_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


def rollups_off_refused() -> str | None:
    """None if ``store.archive_policy.default: []`` is accepted, else the error."""
    try:
        Settings(store={"url": "sqlite://", "archive_policy": NO_ROLLUPS})
    except pydantic.ValidationError as exc:
        return str(exc).splitlines()[0] + ": " + exc.errors()[0]["msg"]
    return None


def store_facts(url: str) -> dict[str, Any]:
    """Samples, bytes on disk and rollup rows per granularity (None: no rollups table)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            samples = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()
            rollups: dict[str, int] | None = None
            inspector = sa.inspect(conn)
            if inspector.has_table("rollups"):
                # Buckets, wherever they lie: staged rows (rollups_recent, SQLite) too.
                source = "rollups"
                if inspector.has_table("rollups_recent"):
                    key = "series_id, granularity, bucket"
                    source = (
                        f"(SELECT {key} FROM rollups UNION SELECT {key} FROM rollups_recent)"
                        " AS buckets"
                    )
                rows = conn.execute(
                    sa.text(
                        f"SELECT granularity, count(*) FROM {source} "
                        "GROUP BY granularity ORDER BY granularity"
                    )
                )
                rollups = {str(granularity): count for granularity, count in rows}
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                path = Path(engine.url.database or "")
                size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
            else:
                size = conn.execute(
                    sa.text("SELECT pg_database_size(current_database())")
                ).scalar_one()
    finally:
        engine.dispose()
    return {"samples": samples, "bytes": size, "rollup_rows": rollups}


def write_all(
    store: Store, batches: Iterator[list[Counter]], total: int, label: str | None = None
) -> dict[str, Any]:
    """Write the batches; return seconds in write_batch and overall (with generation)."""
    began = last_said = time.perf_counter()
    writing = 0.0
    done = 0
    said_done, said_writing = 0, 0.0
    # (samples stored, write_batch samples/s since the previous point): a store that
    # slows as it grows shows here, where the overall rate would hide it.
    progress: list[tuple[int, int]] = []
    for batch in batches:
        before = time.perf_counter()
        store.write_batch(batch)
        after = time.perf_counter()
        writing += after - before
        done += len(batch)
        if label and (after - last_said >= 15 or done == total):
            recent = (done - said_done) / (writing - said_writing)
            progress.append((done, round(recent)))
            last_said, said_done, said_writing = after, done, writing
            elapsed = after - began
            # At the recent pace, with generation taking its share as so far.
            left = (total - done) / recent * (elapsed / writing)
            print(
                f"  {label}: {done:,} / {total:,} ({100 * done / total:.0f}%), "
                f"{recent:,.0f}/s in write_batch lately ({done / writing:,.0f}/s overall), "
                f"{elapsed:.0f} s so far, ~{left:.0f} s to go",
                flush=True,
            )
    elapsed = time.perf_counter() - began
    result: dict[str, Any] = {
        "samples": done,
        "seconds": round(elapsed, 2),
        "write_batch_seconds": round(writing, 2),
        "write_batch_samples_per_second": round(done / writing) if writing else 0,
    }
    if label:
        result["progress"] = progress
    return result


# -- queries --------------------------------------------------------------------------


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50/p90/p99 and the extremes, in ms."""
    ordered = sorted(seconds)

    def rank(p: float) -> float:
        return round(1000 * ordered[max(0, math.ceil(p * len(ordered)) - 1)], 3)

    return {
        "runs": len(ordered),
        "p50_ms": rank(0.5),
        "p90_ms": rank(0.9),
        "p99_ms": rank(0.99),
        "min_ms": round(1000 * ordered[0], 3),
        "max_ms": round(1000 * ordered[-1], 3),
    }


def timed(call: Callable[[Any], Any], arguments: Sequence[Any]) -> tuple[dict[str, float], Any]:
    for argument in arguments[:2]:
        call(argument)  # warm-up
    seconds = []
    result = None
    for argument in arguments:
        began = time.perf_counter()
        result = call(argument)
        seconds.append(time.perf_counter() - began)
    return percentiles(seconds), result


def differences(fast: list[Statistic], raw: list[Statistic]) -> str | None:
    """None if two answers hold the same numbers (sums to float tolerance), else the first
    difference."""
    if len(fast) != len(raw):
        return f"{len(fast)} statistics against {len(raw)} by raw scan"
    for a, b in zip(fast, raw, strict=True):
        where = f"period {a.period_start} {dict(a.groupby)}"
        if (a.period_start, dict(a.groupby), a.unit) != (b.period_start, dict(b.groupby), b.unit):
            return f"{where}: periods or groups differ from the raw scan's"
        if (a.count, a.min, a.max) != (b.count, b.min, b.max):
            return f"{where}: count/min/max {a.count}/{a.min}/{a.max} != {b.count}/{b.min}/{b.max}"
        if not math.isclose(a.sum, b.sum, rel_tol=1e-9, abs_tol=1e-6):
            return f"{where}: sum {a.sum!r} != {b.sum!r}"
        if (a.duration_start, a.duration_end) != (b.duration_start, b.duration_end):
            return f"{where}: duration differs"
    return None


def store_queries(store: Store, shape: Shape, repetitions: int) -> dict[str, Any]:
    rng = random.Random(3600)
    since, until = shape.start, shape.end
    one = [
        SampleFilter(
            meter="cpu",
            resource_id=rng.choice(shape.instances).resource_id,
            since=since,
            until=until,
        )
        for _ in range(repetitions)
    ]
    project = [
        SampleFilter(meter="cpu", project_id=rng.choice(shape.projects), since=since, until=until)
        for _ in range(repetitions)
    ]
    has_switch = "rollups" in inspect.signature(store.statistics).parameters
    results: dict[str, Any] = {"rollups_keyword": has_switch}
    for key, label, filters, groupby in (
        ("one_resource", "(a) cpu, 1 resource, period 3600, 30 days", one, ()),
        ("project_by_resource", "(b) cpu, 1 project by resource_id", project, ("resource_id",)),
    ):

        def default(f: SampleFilter, groupby: tuple[str, ...] = groupby) -> list[Statistic]:
            return store.statistics(f, period=PERIOD, groupby=groupby)

        def raw(f: SampleFilter, groupby: tuple[str, ...] = groupby) -> list[Statistic]:
            return store.statistics(f, period=PERIOD, groupby=groupby, **RAW_SCAN)

        figures, answer = timed(default, filters)
        entry: dict[str, Any] = {"statistics_returned": len(answer), "default": figures}
        line = f"    {label:<44} p50 {figures['p50_ms']:8.2f} ms  p90 {figures['p90_ms']:8.2f}"
        line += f"  p99 {figures['p99_ms']:8.2f}  ({len(answer):,} statistics)"
        print(line, flush=True)
        if has_switch:
            raw_figures, _ = timed(raw, filters)
            entry["raw"] = raw_figures
            entry["speedup_p50"] = round(raw_figures["p50_ms"] / figures["p50_ms"], 1)
            entry["differences"] = differences(default(filters[0]), raw(filters[0]))
            print(
                f"    {'  same by raw scan (rollups=False)':<44} p50 {raw_figures['p50_ms']:8.2f}"
                f" ms  p90 {raw_figures['p90_ms']:8.2f}  p99 {raw_figures['p99_ms']:8.2f}"
                f"  -> {entry['speedup_p50']}x faster with rollups",
                flush=True,
            )
            print(f"      same numbers both ways: {entry['differences'] or 'yes'}", flush=True)
        results[key] = entry
    if not has_switch:
        print(
            "    rollup path not available yet: store.statistics has no `rollups` keyword, "
            "so the figures above are whatever its default path is and no ratio is made",
            flush=True,
        )
    return results


def api_queries(url: str, workdir: Path, shape: Shape, repetitions: int) -> dict[str, Any]:
    """(a) and (b) through GET /v2/meters/cpu/statistics on a one-worker server."""
    process, base = serve(url, workdir)
    try:
        rng = random.Random(3600)
        window = [
            ("q.field", "timestamp"),
            ("q.op", "ge"),
            ("q.value", shape.start.strftime("%Y-%m-%dT%H:%M:%S")),
            ("q.field", "timestamp"),
            ("q.op", "lt"),
            ("q.value", shape.end.strftime("%Y-%m-%dT%H:%M:%S")),
            ("period", str(PERIOD)),
        ]
        one = [
            [
                ("q.field", "resource_id"),
                ("q.op", "eq"),
                ("q.value", rng.choice(shape.instances).resource_id),
                *window,
            ]
            for _ in range(repetitions)
        ]
        project = [
            [
                ("q.field", "project_id"),
                ("q.op", "eq"),
                ("q.value", rng.choice(shape.projects)),
                *window,
                ("groupby", "resource_id"),
            ]
            for _ in range(repetitions)
        ]
        results: dict[str, Any] = {}
        with httpx.Client(base_url=base, headers={"X-Auth-Token": TOKEN}, timeout=600) as client:
            for key, label, params in (
                ("one_resource", "(a) GET .../statistics, 1 resource", one),
                ("project_by_resource", "(b) GET .../statistics, 1 project", project),
            ):
                # Until the whole body is in, and until the client has parsed it too:
                # parsing thousands of statistics is the client's cost, not the server's.
                received: list[float] = []
                parsed: list[float] = []
                returned = 0
                for index, query in enumerate([*params[:2], *params]):
                    began = time.perf_counter()
                    # Encoded by hand: httpx would group repeated keys, and q.* pair by position.
                    response = client.get(f"/v2/meters/cpu/statistics?{urlencode(query)}")
                    response.raise_for_status()
                    got = time.perf_counter()
                    returned = len(response.json())
                    if index >= 2:  # after two untimed, as timed() does
                        received.append(got - began)
                        parsed.append(time.perf_counter() - began)
                figures = percentiles(received)
                with_parse = percentiles(parsed)
                results[key] = {"statistics_returned": returned, **figures, "parsed": with_parse}
                print(
                    f"    {label:<44} p50 {figures['p50_ms']:8.2f} ms  p90 "
                    f"{figures['p90_ms']:8.2f}  p99 {figures['p99_ms']:8.2f}  "
                    f"({returned:,} statistics; parsed by the client too: p50 "
                    f"{with_parse['p50_ms']:.2f} ms)",
                    flush=True,
                )
        return results
    finally:
        stop(process)


# -- ingest ---------------------------------------------------------------------------


def spread(rates: list[float]) -> dict[str, Any]:
    return {
        "runs": [round(rate) for rate in rates],
        "median": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
    }


def ingest(backend: str, workdir: Path, shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    count = min(args.ingest_samples, shape.samples)
    refused = rollups_off_refused()
    modes = ["on"] if refused else ["on", "off"]
    if refused:
        print(
            f"    rollups cannot be switched off yet (store.archive_policy.default: [] is "
            f"refused: {refused}); timing the default policy only",
            flush=True,
        )
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    rollup_rows: dict[str, Any] = {}

    def open_for(mode: str, url: str) -> Store:
        settings: dict[str, Any] = {"url": url}
        if mode == "off":
            settings["archive_policy"] = NO_ROLLUPS
        elif args.ingest_policy is not None:
            settings["archive_policy"] = args.ingest_policy
        return open_store(Settings(store=settings).store)

    def record(run: int, mode: str, seconds: float, url: str) -> None:
        facts = store_facts(url)
        if facts["samples"] != count:
            raise RuntimeError(f"stored {facts['samples']} of {count} samples")
        rates[mode].append(count / seconds)
        rollup_rows[mode] = facts["rollup_rows"]
        print(
            f"    run {run + 1}, rollups {mode:<3}: {count / seconds:,.0f} samples/s in "
            f"write_batch ({seconds:.1f} s), rollup rows {facts['rollup_rows']}",
            flush=True,
        )

    for run in range(args.runs):
        if args.interleaved and len(modes) == 2:
            # Each batch into both stores, in turn: drift hits both sides alike.
            with fresh_database(backend, workdir) as on, fresh_database(backend, workdir) as off:
                urls = {"on": on, "off": off}
                stores = {mode: open_for(mode, url) for mode, url in urls.items()}
                seconds = dict.fromkeys(modes, 0.0)
                try:
                    for index, batch in enumerate(shape.batches(args.batch, count)):
                        for mode in modes if index % 2 == 0 else modes[::-1]:
                            before = time.perf_counter()
                            stores[mode].write_batch(batch)
                            seconds[mode] += time.perf_counter() - before
                finally:
                    for store in stores.values():
                        store.close()
                for mode in modes:
                    record(run, mode, seconds[mode], urls[mode])
            continue
        # Alternate the order, so drift on a shared machine does not favour one side.
        for mode in modes if run % 2 == 0 else modes[::-1]:
            with fresh_database(backend, workdir) as url:
                store = open_for(mode, url)
                try:
                    figures = write_all(store, shape.batches(args.batch, count), count)
                finally:
                    store.close()
                record(run, mode, figures["write_batch_seconds"], url)
    result: dict[str, Any] = {
        "samples": count,
        "interleaved": bool(args.interleaved),
        "policy": args.ingest_policy or "default",
        "rollups_on": spread(rates["on"]),
        "rollups_off": spread(rates["off"]) if "off" in rates else None,
        "rollup_rows": rollup_rows,
        "cost_percent": None,
        "note": None,
    }
    written = rollup_rows.get("on")
    if refused:
        result["note"] = f"rollups cannot be switched off yet: {refused}"
    elif not written or not any(written.values()):
        result["note"] = "rollups are not written at ingest yet: both runs time the same path"
    elif rollup_rows.get("off") and any(rollup_rows["off"].values()):
        result["note"] = "rollups were written with archive_policy.default: [] too"
    if result["rollups_off"] is not None:
        on, off = result["rollups_on"]["median"], result["rollups_off"]["median"]
        result["cost_percent"] = round(100 * (1 - on / off), 1)
        print(
            f"    rollups on {on:,}/s ({result['rollups_on']['min']:,}-"
            f"{result['rollups_on']['max']:,}), off {off:,}/s ({result['rollups_off']['min']:,}"
            f"-{result['rollups_off']['max']:,}): rollups cost {result['cost_percent']}% of "
            f"ingest throughput",
            flush=True,
        )
    else:
        on = result["rollups_on"]
        print(
            f"    default policy {on['median']:,}/s ({on['min']:,}-{on['max']:,}); "
            "no cost figure without rollups off",
            flush=True,
        )
    if result["note"]:
        print(f"    note: {result['note']}", flush=True)
    return result


# -- the run --------------------------------------------------------------------------


def bench(backend: str, workdir: Path, shape: Shape, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if args.queries:
        result.update(fill_and_query(backend, workdir, shape, args))
    if args.ingest_samples > 0 and args.runs > 0:
        print(
            f"  ingest: write_batch of the newest {min(args.ingest_samples, shape.samples):,} "
            f"samples into fresh stores, {args.runs} runs each way:",
            flush=True,
        )
        result["ingest"] = ingest(backend, workdir, shape, args)
    return result


def fill_and_query(
    backend: str, workdir: Path, shape: Shape, args: argparse.Namespace
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    print(
        f"{backend}: filling with {shape.samples:,} samples of {len(shape.instances):,} "
        f"resources in {len(shape.projects):,} projects, {shape.start:%Y-%m-%d %H:%M} to "
        f"{shape.end:%Y-%m-%d %H:%M} UTC, polled every {shape.interval_us / 1e6:.1f} s...",
        flush=True,
    )
    with fresh_database(backend, workdir) as url:
        store = open_store(Settings(store={"url": url}).store)
        try:
            result["fill"] = write_all(
                store, shape.batches(args.batch), shape.samples, label=backend
            )
            if backend == "postgresql":
                # What autovacuum would have done on a store that filled up over a month.
                began = time.perf_counter()
                engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
                with engine.connect() as conn:
                    conn.execute(sa.text("VACUUM ANALYZE"))
                engine.dispose()
                result["fill"]["vacuum_analyze_seconds"] = round(time.perf_counter() - began, 1)
            facts = store_facts(url)
            result["store"] = {**facts, "bytes_per_sample": round(facts["bytes"] / shape.samples)}
            print(
                f"  stored {facts['samples']:,} samples in {result['fill']['seconds']:.0f} s "
                f"({result['fill']['write_batch_samples_per_second']:,}/s in write_batch); "
                f"{facts['bytes'] / 1e6:,.0f} MB, {result['store']['bytes_per_sample']} "
                f"bytes/sample; rollup rows by granularity: {facts['rollup_rows']}",
                flush=True,
            )
            print(f"  statistics, store level, {args.repetitions} runs each:", flush=True)
            # As the API server does once started: start-up (and here the fill's
            # survivors) out of the collector's full collections, young ones rarer.
            threshold = gc.get_threshold()
            settle_heap()
            try:
                result["queries"] = store_queries(store, shape, args.repetitions)
            finally:
                gc.unfreeze()
                gc.set_threshold(*threshold)
        finally:
            store.close()
        if args.api:
            print(f"  statistics through the HTTP API, {args.repetitions} runs each:", flush=True)
            try:
                result["api"] = api_queries(url, workdir, shape, args.repetitions)
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"    skipped: {exc}", flush=True)
                result["api"] = {"error": str(exc)}
    return result


def verdicts(backend: str, result: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(what, met or None if not measurable, figures) for each target."""
    out: list[tuple[str, bool | None, str]] = []
    queries = result.get("queries", {})
    for key, label in (("one_resource", "(a) 1 resource"), ("project_by_resource", "(b) project")):
        entry = queries.get(key)
        if entry is None:
            continue
        p50 = entry["default"]["p50_ms"]
        path = "default path" if queries["rollups_keyword"] else "default path; no rollups keyword"
        what = f"{backend} {label}: p50 <= {TARGETS['p50_ms']} ms"
        out.append((what, p50 <= TARGETS["p50_ms"], f"{p50:.2f} ms ({path})"))
        what = f"{backend} {label}: >= {TARGETS['speedup']}x the raw scan"
        if "speedup_p50" in entry:
            speedup = entry["speedup_p50"]
            figures = f"{speedup}x ({entry['raw']['p50_ms']:.2f} -> {p50:.2f} ms)"
            out.append((what, speedup >= TARGETS["speedup"], figures))
        else:
            out.append((what, None, "not available yet (no rollups=False)"))
    api = result.get("api")
    for key, label in (("one_resource", "(a) 1 resource"), ("project_by_resource", "(b) project")):
        what = f"{backend} {label} over HTTP: p50 <= {TARGETS['p50_ms']} ms"
        if api is None:
            continue
        if key not in api:
            out.append((what, None, f"the API was not timed: {api.get('error')}"))
            continue
        p50 = api[key]["p50_ms"]
        figures = f"{p50:.2f} ms (parsed by the client too: {api[key]['parsed']['p50_ms']:.2f})"
        out.append((what, p50 <= TARGETS["p50_ms"], figures))
    ingest_result = result.get("ingest")
    if ingest_result is not None:
        what = f"{backend} ingest: rollups cost <= {TARGETS['ingest_cost_percent']}%"
        cost = ingest_result["cost_percent"]
        if cost is None or ingest_result["note"]:
            out.append((what, None, ingest_result["note"] or "no figure"))
        else:
            out.append((what, cost <= TARGETS["ingest_cost_percent"], f"{cost}%"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--samples", type=int, default=10_000_000, help="samples to fill with (10,000,000)"
    )
    parser.add_argument("--resources", type=int, default=1_000, help="instances (1,000)")
    parser.add_argument(
        "--projects",
        type=int,
        help="projects they belong to (one per 10 resources: 100)",
    )
    parser.add_argument("--batch", type=int, default=5_000, help="samples per write_batch (5,000)")
    parser.add_argument(
        "--repetitions", type=int, default=20, help="timed runs of each query, after 2 untimed (20)"
    )
    parser.add_argument(
        "--ingest-samples",
        type=int,
        default=1_000_000,
        help="samples per ingest run; 0 skips the ingest part (1,000,000)",
    )
    parser.add_argument("--runs", type=int, default=3, help="ingest runs each way (3)")
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="ingest runs write each batch to a store with rollups and to one without, in "
        "turn, instead of one store after the other: the drift of a shared machine then "
        "hits both alike",
    )
    parser.add_argument(
        "--ingest-policy",
        type=json.loads,
        help="store.archive_policy of the ingest runs with rollups, as JSON (the default "
        'policy); e.g. \'{"default": [{"granularity": "1h", "timespan": "90d"}, '
        '{"granularity": "1d"}]}\' for no 1-minute level',
    )
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="sqlite and/or postgresql (both)"
    )
    parser.add_argument(
        "--no-api", dest="api", action="store_false", help="skip the HTTP API timings"
    )
    parser.add_argument(
        "--no-queries",
        dest="queries",
        action="store_false",
        help="skip the fill and the statistics timings: the ingest part only",
    )
    args = parser.parse_args()
    if args.projects is None:
        args.projects = max(1, args.resources // 10)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown or not backends:
        parser.error(f"--backends takes sqlite and/or postgresql, not {args.backends!r}")
    if args.resources < 1 or args.projects < 1 or args.projects > args.resources:
        parser.error("need at least one resource, and 1 <= --projects <= --resources")
    if args.samples < METERS * args.resources or args.repetitions < 1 or args.batch < 1:
        parser.error("need --samples >= 2 x --resources, --repetitions >= 1, --batch >= 1")

    shape = Shape.build(args.samples, args.resources, args.projects)
    summary: dict[str, Any] = {
        "benchmark": "statistics",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "samples": args.samples,
        "resources": args.resources,
        "projects": args.projects,
        "days": DAYS,
        "poll_interval_seconds": shape.interval_us / 1e6,
        "period": PERIOD,
        "range": [shape.start.isoformat(), shape.end.isoformat()],
        "repetitions": args.repetitions,
        "batch": args.batch,
        "targets": TARGETS,
    }
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nephoscope-bench-statistics-") as tmp:
        for backend in backends:
            if backend == "postgresql" and (why := postgresql_reachable()) is not None:
                print(f"postgresql: skipped ({why})")
                summary["postgresql"] = {"skipped": why}
                continue
            summary[backend] = bench(backend, Path(tmp), shape, args)
    summary["seconds"] = round(time.perf_counter() - began)

    print("targets:")
    all_verdicts = []
    for backend in backends:
        if "skipped" in summary.get(backend, {"skipped": True}):
            continue
        for what, met, figures in verdicts(backend, summary[backend]):
            word = "not measurable" if met is None else "met" if met else "MISSED"
            print(f"  {what:<52} {word}: {figures}")
            all_verdicts.append({"target": what, "met": met, "figures": figures})
    summary["verdicts"] = all_verdicts
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"statistics-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"took {summary['seconds']} s; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
