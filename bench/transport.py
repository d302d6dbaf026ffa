"""Transport benchmark: signed samples through RabbitMQ into PostgreSQL.

Publishes 200,000 samples to RabbitMQ (publisher rate), then times `nephoscope
collector` processes draining the queue into a fresh PostgreSQL database: one
collector, then two. Needs RabbitMQ and PostgreSQL on 127.0.0.1. Writes JSON to
bench/results/.

While the collectors drain, it reads the CPU time of each part (every collector,
split into its main thread and the others; RabbitMQ's beam.smp; every postgres
process; this benchmark) and of the whole machine, so the figures say where the
cores went: RabbitMQ and PostgreSQL share the machine with the collectors, and
"other" is whatever else ran meanwhile (noise).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from kombu import Connection

from nephoscope.config import Settings
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.publisher import Publisher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import make_counters

RESULTS = Path(__file__).resolve().parent / "results"
AMQP = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRES = os.environ.get(
    "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PARTS = (
    "collector main",
    "collector other threads",
    "rabbitmq",
    "postgres backends",
    "postgres background",
    "benchmark",
    "other",
)
#: A client backend's process title names its client: host(port) or [local];
#: PostgreSQL's own processes (postmaster, WAL writer, autovacuum...) do not.
CLIENT = re.compile(r"\(\d+\)|\[local\]")


def _cpu(times: Any) -> float:
    return float(times.user + times.system)


def _machine_busy() -> float:
    times = psutil.cpu_times()
    # guest time is already counted in user time on Linux.
    idle = times.idle + getattr(times, "iowait", 0.0)
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return float(sum(times) - idle - guest)


def _part(process: psutil.Process) -> str | None:
    name = process.info["name"]
    if name == "beam.smp":
        return "rabbitmq"
    if name != "postgres":
        return None
    title = " ".join(process.info["cmdline"] or ())
    return "postgres backends" if CLIENT.search(title) else "postgres background"


def _services() -> dict[int, tuple[str, float]]:
    found = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            part = _part(process)
            if part is not None:
                found[process.pid] = (part, _cpu(process.cpu_times()))
        except psutil.Error:
            continue
    return found


class CpuWatch:
    """CPU seconds of each part and of the machine, from construction to :meth:`read`."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.machine = _machine_busy()
        self.services = _services()
        self.bench = _cpu(psutil.Process().cpu_times())

    def read(self, collectors: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
        """Call while the collectors still run: their CPU time dies with them."""
        seconds = time.perf_counter() - self.began
        parts = dict.fromkeys(PARTS, 0.0)
        for popen in collectors:
            # A collector starts inside the window: all of its CPU time counts,
            # imports and connecting included. Its main thread's id is its pid.
            try:
                for thread in psutil.Process(popen.pid).threads():
                    part = "collector main" if thread.id == popen.pid else "collector other threads"
                    parts[part] += thread.user_time + thread.system_time
            except psutil.Error:
                continue
        for pid, (part, cpu) in _services().items():
            # Processes that started in the window count whole; ones that ended
            # in it (an autovacuum worker) are missing here and land in "other".
            parts[part] += cpu - self.services.get(pid, (part, 0.0))[1]
        parts["benchmark"] = _cpu(psutil.Process().cpu_times()) - self.bench
        busy = _machine_busy() - self.machine
        parts["other"] = max(0.0, busy - sum(parts.values()))
        return {
            "seconds": seconds,
            "cores": psutil.cpu_count() or 1,
            "busy_cpu_seconds": busy,
            "cpu_seconds": parts,
        }


def _wait_stored(engine: sa.Engine, total: int, began: float) -> tuple[float, int]:
    """Wait until ``total`` samples are stored; return when a tenth was, and how many then.

    The rate after that mark leaves out the collectors' start-up (imports,
    connecting: about a CPU second each), which is paid once per process.
    """
    # max(id) reads one index entry; count(*) scans every row and would steal
    # a good part of a core from what is measured if it ran twenty times a second.
    stored = 0
    mark: tuple[float, int] | None = None
    while stored < total:
        time.sleep(0.05)
        with engine.connect() as conn:
            newest = conn.execute(sa.text("SELECT max(id) FROM samples")).scalar() or 0
            if (mark is None and newest >= total // 10) or newest >= total:
                now = time.perf_counter()
                stored = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()
                if mark is None:
                    mark = (now, stored)
        if time.perf_counter() - began > 600:
            raise RuntimeError(f"only {stored} stored after 600s")
    assert mark is not None
    return mark


def one_run(counters: list[Any], collectors: int, workdir: Path) -> dict[str, Any]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    store_url = sa.make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    settings = Settings(
        metering_secret="bench",
        bus={"url": AMQP, "exchange": name, "topic": name},
        store={"url": store_url},
    )
    config = workdir / f"{name}.yaml"
    config.write_text(
        f"metering_secret: bench\nbus:\n  url: '{AMQP}'\n  exchange: {name}\n  topic: {name}\n"
        f"store:\n  url: '{store_url}'\n",
        encoding="utf-8",
    )
    env = dict(os.environ, NEPHOSCOPE_CONFIG=str(config))
    # Create the schema first, so the collectors' start-up is not timed.
    subprocess.run(
        [sys.executable, "-m", "nephoscope", "db", "upgrade"],
        env=env,
        check=True,
        capture_output=True,
    )
    engine = sa.create_engine(store_url)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        publisher = Publisher(settings)
        began = time.perf_counter()
        for start in range(0, len(counters), 5000):
            publisher.publish(counters[start : start + 5000])
        published = time.perf_counter() - began
        publisher.close()
        watch = CpuWatch()
        began = time.perf_counter()
        for _ in range(collectors):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "nephoscope", "collector"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        marked_at, marked = _wait_stored(engine, len(counters), began)
        ended = time.perf_counter()
        drained = ended - began
        cpu = watch.read(processes)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=60)
        engine.dispose()
        bus = KombuBus(settings.bus)
        with Connection(AMQP) as conn:
            channel = conn.channel()
            bus.queue.bind(channel).delete()
            bus.exchange.bind(channel).delete()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
    return {
        "publisher_samples_per_second": len(counters) / published,
        "collector_samples_per_second": len(counters) / drained,
        "steady_samples_per_second": (len(counters) - marked) / (ended - marked_at),
        "cpu": cpu,
    }


def describe_cpu(runs: list[dict[str, Any]], samples: int) -> str:
    """Median CPU per part over the runs, in microseconds per sample and in cores."""
    lines = []
    for part in PARTS:
        per_sample = statistics.median(r["cpu"]["cpu_seconds"][part] for r in runs) / samples
        cores = statistics.median(r["cpu"]["cpu_seconds"][part] / r["cpu"]["seconds"] for r in runs)
        lines.append(f"    {part:<25} {per_sample * 1e6:6.2f} us/sample  {cores:4.2f} cores")
    busy = statistics.median(r["cpu"]["busy_cpu_seconds"] / r["cpu"]["seconds"] for r in runs)
    cores = runs[0]["cpu"]["cores"]
    lines.append(f"    machine busy {busy:.2f} of {cores} cores")
    return "\n".join(lines)


def _figures(values: list[float]) -> str:
    return ", ".join(f"{v:,.0f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    counters = make_counters(args.samples, 200)
    summary: dict[str, Any] = {
        "benchmark": "transport",
        "when": datetime.now(UTC).isoformat(),
        "samples": args.samples,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for collectors in (1, 2):
            runs = [one_run(counters, collectors, Path(tmp)) for _ in range(args.runs)]
            rates = [r["collector_samples_per_second"] for r in runs]
            steady = [r["steady_samples_per_second"] for r in runs]
            pubs = [r["publisher_samples_per_second"] for r in runs]
            summary[f"{collectors}_collector"] = {
                "runs": runs,
                "median": statistics.median(rates),
                "min": min(rates),
                "max": max(rates),
                "steady": {
                    "median": statistics.median(steady),
                    "min": min(steady),
                    "max": max(steady),
                },
            }
            summary.setdefault("publisher_samples_per_second", statistics.median(pubs))
            print(
                f"{collectors} collector(s): {statistics.median(rates):,.0f} samples/s "
                f"(runs {_figures(rates)}); after start-up {statistics.median(steady):,.0f}/s "
                f"(runs {_figures(steady)}); publisher {statistics.median(pubs):,.0f}/s\n"
                "  CPU while draining (median of the runs):\n" + describe_cpu(runs, args.samples)
            )
    one, two = summary["1_collector"], summary["2_collector"]
    summary["scaling"] = two["median"] / one["median"]
    summary["steady_scaling"] = two["steady"]["median"] / one["steady"]["median"]
    print(
        f"two collectors / one: {summary['scaling']:.2f}x, after start-up "
        f"{summary['steady_scaling']:.2f}x; targets: one >= 30,000/s, two >= 1.6x, "
        "publisher >= 50,000/s"
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"transport-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
