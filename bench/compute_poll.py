"""Compute polling benchmark: one agent cycle over 1,000 instances on libvirt's test driver.

Generates a test-driver node with ``--domains`` running domains (Nova metadata,
two disks, two NICs each), then, in a fresh process per run, times
``AgentManager.poll`` of every compute pollster, discovery included, and reads
the process's peak RSS (``resource.getrusage``).

The test driver runs inside the agent's process: opening the connection parses
the node file and keeps the 1,000 domains in this process, which an agent
talking to libvirtd never does. The run therefore opens the connection first,
timed on its own, and reports how much the peak RSS grew while it did, and the
peak without that growth (the agent's own). The node file is written without
indentation because the test driver's parse of it costs memory per text node.
Prints the figures and writes them as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_SECONDS = 2.0
TARGET_RSS_MB = 100.0

DOMAIN = """  <domain type='test'>
    <name>instance-{index:08x}</name>
    <uuid>{uuid}</uuid>
    <metadata>
      <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
        <nova:package version="29.0.1"/>
        <nova:name>bench-{index}</nova:name>
        <nova:creationTime>2026-11-01 00:00:00</nova:creationTime>
        <nova:flavor name="m1.small">
          <nova:memory>2048</nova:memory>
          <nova:disk>20</nova:disk>
          <nova:swap>0</nova:swap>
          <nova:ephemeral>10</nova:ephemeral>
          <nova:vcpus>2</nova:vcpus>
        </nova:flavor>
        <nova:owner>
          <nova:user uuid="{user:032x}">user-{user}</nova:user>
          <nova:project uuid="{project:032x}">project-{project}</nova:project>
        </nova:owner>
        <nova:root type="image" uuid="d2b7e0f4-1a3c-4e5b-9f60-7a8b9c0d1e2f"/>
      </nova:instance>
    </metadata>
    <memory unit='MiB'>2048</memory>
    <currentMemory unit='MiB'>2048</currentMemory>
    <vcpu placement='static'>2</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <source file='/var/lib/nova/instances/{uuid}/disk'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='file' device='disk'>
        <source file='/var/lib/nova/instances/{uuid}/disk.eph0'/>
        <target dev='vdb' bus='virtio'/>
      </disk>
      <interface type='bridge'>
        <mac address='fa:16:3e:{a:02x}:{b:02x}:01'/>
        <source bridge='br-int'/>
        <target dev='tap{index:08x}-a'/>
      </interface>
      <interface type='bridge'>
        <mac address='fa:16:3e:{a:02x}:{b:02x}:02'/>
        <source bridge='br-int'/>
        <target dev='tap{index:08x}-b'/>
      </interface>
      <memballoon model='virtio'/>
    </devices>
  </domain>
"""


def write_node(path: Path, domains: int) -> None:
    """A test-driver node file with ``domains`` running Nova instances."""
    with path.open("w", encoding="utf-8") as out:
        out.write("<node>")
        for index in range(domains):
            domain = DOMAIN.format(
                index=index,
                uuid=f"00000000-0000-4000-8000-{index:012x}",
                user=index % 50,
                project=index % 20,
                a=index // 256 % 256,
                b=index % 256,
            )
            out.write("".join(line.strip() for line in domain.splitlines()))
        out.write("</node>\n")


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1024**2


def child(node: Path, cycles: int) -> dict[str, Any]:
    """One run, in this (fresh) process: the figures of ``cycles`` agent cycles."""
    from nephoscope.agent import AgentManager
    from nephoscope.compute.inspector import import_libvirt
    from nephoscope.config import PollingSource, Settings

    settings = Settings(
        host="bench-compute",
        libvirt={"uri": f"test://{node}"},
        polling={"namespaces": ["compute"]},
    )
    agent = AgentManager(settings)
    loaded = agent.loaded["nephoscope.poll.compute"]
    if loaded.failed or loaded.unusable or len(loaded.plugins) < 6:
        raise RuntimeError(f"compute pollsters not all loaded: {loaded}")
    source = PollingSource(name="all", interval=600, meters=["*"])
    import_libvirt()  # its libraries are the agent's, whatever the driver
    rss_before_connect = peak_rss_mb()
    began = time.perf_counter()
    agent.compute_inspector.connection  # noqa: B018 - opens it: the test driver loads the node
    connect_seconds = time.perf_counter() - began
    test_driver_mb = peak_rss_mb() - rss_before_connect
    seconds, counters = [], []
    for _ in range(cycles):
        began = time.perf_counter()
        produced = agent.poll(source)
        seconds.append(time.perf_counter() - began)
        counters.append(len(produced))
        del produced
    peak = peak_rss_mb()
    return {
        "connect_seconds": connect_seconds,
        "first_cycle_seconds": seconds[0],
        "cycle_seconds": seconds,
        "cycle_seconds_median": statistics.median(seconds),
        "counters_per_cycle": counters[-1],
        "rss_before_connect_mb": rss_before_connect,
        "test_driver_rss_mb": test_driver_mb,
        "peak_rss_mb": peak,
        "agent_peak_rss_mb": peak - test_driver_mb,
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3, help="processes, one run each")
    parser.add_argument("--cycles", type=int, default=5, help="cycles per run")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.cycles)))
        return 0

    runs = []
    with tempfile.TemporaryDirectory(prefix="nephoscope-bench-") as tmp:
        node = Path(tmp) / "node.xml"
        write_node(node, args.domains)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEPHOSCOPE_")}
        for index in range(args.runs):
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(node), "--cycles", str(args.cycles)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            run = json.loads(output.splitlines()[-1])
            runs.append(run)
            print(
                f"run {index + 1}: cycle {run['cycle_seconds_median']:.3f}s median "
                f"(first {run['first_cycle_seconds']:.3f}s, "
                f"connect {run['connect_seconds']:.3f}s), "
                f"{run['counters_per_cycle']:,} counters; peak RSS {run['peak_rss_mb']:.1f} MB, "
                f"of which the in-process test driver {run['test_driver_rss_mb']:.1f} MB: "
                f"agent {run['agent_peak_rss_mb']:.1f} MB"
            )
    summary = {
        "benchmark": "compute_poll",
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
        },
        "domains": args.domains,
        "disks_per_domain": 2,
        "nics_per_domain": 2,
        "cycles_per_run": args.cycles,
        "runs": runs,
        "cycle_seconds": spread([r["cycle_seconds_median"] for r in runs]),
        "slowest_cycle_seconds": spread([max(r["cycle_seconds"]) for r in runs]),
        "connect_seconds": spread([r["connect_seconds"] for r in runs]),
        "peak_rss_mb": spread([r["peak_rss_mb"] for r in runs]),
        "agent_peak_rss_mb": spread([r["agent_peak_rss_mb"] for r in runs]),
        "targets": {"cycle_seconds": TARGET_SECONDS, "peak_rss_mb": TARGET_RSS_MB},
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"compute_poll-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    cycle, slowest = summary["cycle_seconds"], summary["slowest_cycle_seconds"]
    rss, agent_rss = summary["peak_rss_mb"], summary["agent_peak_rss_mb"]
    print(
        f"compute_poll: {args.domains:,} domains over {args.runs} runs: cycle median "
        f"{cycle['median']:.3f}s (runs {cycle['min']:.3f}-{cycle['max']:.3f}s, slowest "
        f"{slowest['max']:.3f}s; target {TARGET_SECONDS:g}s: "
        f"{'met' if slowest['max'] <= TARGET_SECONDS else 'NOT met'}); peak RSS "
        f"{rss['min']:.1f}-{rss['max']:.1f} MB with the test driver, agent "
        f"{agent_rss['min']:.1f}-{agent_rss['max']:.1f} MB (target {TARGET_RSS_MB:g} MB: "
        f"{'met' if agent_rss['max'] <= TARGET_RSS_MB else 'NOT met'}); written to {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
