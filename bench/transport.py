"""Transport benchmark: signed samples through RabbitMQ into PostgreSQL.

Publishes 200,000 samples to RabbitMQ (publisher rate), then times `nephoscope
collector` processes draining the queue into a fresh PostgreSQL database: one
collector, then two. Needs RabbitMQ and PostgreSQL on 127.0.0.1. Writes JSON to
bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

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


def one_run(counters: list, collectors: int, workdir: Path) -> dict[str, float]:
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
        stored = 0
        while stored < len(counters):
            time.sleep(0.1)
            with engine.connect() as conn:
                stored = conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one()
            if time.perf_counter() - began > 600:
                raise RuntimeError(f"only {stored} stored after 600s")
        drained = time.perf_counter() - began
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
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    counters = make_counters(args.samples, 200)
    summary: dict[str, object] = {
        "benchmark": "transport",
        "when": datetime.now(UTC).isoformat(),
        "samples": args.samples,
        "cpus": os.cpu_count(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for collectors in (1, 2):
            runs = [one_run(counters, collectors, Path(tmp)) for _ in range(args.runs)]
            rates = [r["collector_samples_per_second"] for r in runs]
            pubs = [r["publisher_samples_per_second"] for r in runs]
            summary[f"{collectors}_collector"] = {"runs": runs, "median": statistics.median(rates)}
            summary.setdefault("publisher_samples_per_second", statistics.median(pubs))
            print(
                f"{collectors} collector(s): {statistics.median(rates):,.0f} samples/s "
                f"(runs {', '.join(f'{r:,.0f}' for r in rates)}); publisher "
                f"{statistics.median(pubs):,.0f} samples/s"
            )
    one = summary["1_collector"]["median"]  # type: ignore[index]
    two = summary["2_collector"]["median"]  # type: ignore[index]
    summary["scaling"] = two / one
    print(
        f"two collectors / one: {two / one:.2f}x; targets: one >= 30,000/s, "
        f"two >= 1.6x, publisher >= 50,000/s"
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"transport-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
