"""Rollups: what a store keeps per series and time bucket, and when statistics may use them.

A rollup row aggregates one series' samples in one bucket of one granularity:
count, sum, min, max, sum of squares, and the first and last sample (time and
value). Rows merge: two partial aggregates of the same samples' halves make the
aggregate of the whole, which is what lets ingest add a batch to a stored row,
and statistics combine rollups with raw samples at the edges of a range.

Times here are integer microseconds since the epoch; granularities are seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "Level",
    "Partial",
    "Piece",
    "Plan",
    "Row",
    "Window",
    "accumulate",
    "format_granularities",
    "merge",
    "parse_granularities",
    "plan",
]

US: Final = 1_000_000

#: [count, sum, min, max, sum of squares, first time, first value, last time, last value]
Partial = list[float]

#: A time range [start, end) in microseconds; None is unbounded on that side.
Window = tuple[int | None, int | None]


def merge(into: Partial, other: Partial) -> None:
    """Add ``other``'s samples to ``into``.

    On equal times the first stays the one already in ``into`` and the last becomes
    ``other``'s, so merging in arrival order makes the later arrival the newer.
    """
    into[0] += other[0]
    into[1] += other[1]
    if other[2] < into[2]:
        into[2] = other[2]
    if other[3] > into[3]:
        into[3] = other[3]
    into[4] += other[4]
    if other[5] < into[5]:
        into[5], into[6] = other[5], other[6]
    if other[7] >= into[7]:
        into[7], into[8] = other[7], other[8]


#: A rollups table row: series id, granularity, bucket start, then a :data:`Partial`.
Row = tuple[Any, ...]


#: A granularity in seconds, and the earliest bucket start worth writing (None: any).
Level = tuple[int, int | None]


def accumulate(
    series_ids: Sequence[int],
    stamps: Sequence[int],
    volumes: Sequence[float],
    levels: Sequence[tuple[Level, ...]],
) -> list[Row]:
    """Rollup rows of the points (series id, time, volume, levels kept for it), one per
    series, granularity and bucket; points in buckets before a level's earliest skip it."""
    by_levels: dict[tuple[Level, ...], list[int]] = {}
    for index, kept in enumerate(levels):
        by_levels.setdefault(kept, []).append(index)
    rows: list[Row] = []
    for kept, indexes in by_levels.items():
        if len(indexes) == len(stamps):
            ids, times, values = series_ids, stamps, volumes
        else:
            ids = [series_ids[i] for i in indexes]
            times = [stamps[i] for i in indexes]
            values = [volumes[i] for i in indexes]
        for seconds, earliest in kept:
            rows.extend(_level_rows(seconds, earliest, ids, times, values))
    return rows


def _level_rows(
    seconds: int,
    earliest: int | None,
    ids: Sequence[int],
    times: Sequence[int],
    values: Sequence[float],
) -> list[Row]:
    width = seconds * US
    if earliest is not None and times and min(times) < earliest:
        kept = [(i, t, v) for i, t, v in zip(ids, times, values, strict=True) if t >= earliest]
        ids, times, values = [p[0] for p in kept], [p[1] for p in kept], [p[2] for p in kept]
    keys = [(i, t - t % width) for i, t in zip(ids, times, strict=True)]
    if len(set(keys)) == len(keys):
        # Each point alone in its bucket (the usual case at fine granularities).
        return [
            (i, seconds, bucket, 1, v, v, v, v * v, t, v, t, v)
            for (i, bucket), t, v in zip(keys, times, values, strict=True)
        ]
    acc: dict[tuple[int, int], Partial] = {}
    get = acc.get
    for key, t, v in zip(keys, times, values, strict=True):
        row = get(key)
        if row is None:
            acc[key] = [1, v, v, v, v * v, t, v, t, v]
            continue
        # merge() inlined: this loop runs for every point of the coarser levels.
        row[0] += 1
        row[1] += v
        if v < row[2]:
            row[2] = v
        if v > row[3]:
            row[3] = v
        row[4] += v * v
        if t < row[5]:
            row[5], row[6] = t, v
        if t >= row[7]:
            row[7], row[8] = t, v
    return [(i, seconds, bucket, *partial) for (i, bucket), partial in acc.items()]


def format_granularities(seconds: Iterable[int]) -> str:
    """The ``rollup_meters.granularities`` text: sorted seconds, comma-separated."""
    return ",".join(str(s) for s in sorted(set(seconds)))


def parse_granularities(text: str) -> tuple[int, ...]:
    """The inverse of :func:`format_granularities`."""
    return tuple(int(part) for part in text.split(",") if part)


#: Rollups of one granularity (seconds) for buckets starting in [low, high); None unbounded.
Piece = tuple[int, int | None, int | None]


@dataclass(frozen=True, slots=True)
class Plan:
    """How to answer a statistics query: rollup ``pieces`` plus ``raw`` sample windows.

    Together they cover the asked range exactly once.
    """

    pieces: tuple[Piece, ...]
    raw: tuple[Window, ...]


def _ceil(value: int, width: int) -> int:
    return -(-value // width) * width


def plan(
    levels: Sequence[tuple[int, int | None]],
    since: int | None,
    until: int | None,
    start: int,
    period: int | None,
    now: int,
) -> Plan:
    """Cover [``since``, ``until``) with the coarsest rollups that fit, finer ones at
    the edges, and raw samples where none fits.

    ``levels`` are the (granularity seconds, timespan µs or None) kept for the
    meter; ``start`` is where the first period begins. A granularity fits when
    it divides the period and ``start`` lies on its grid, so no rollup bucket
    straddles two periods. Rollups are read only where expiry cannot have
    touched them: from ``now - timespan`` on, rounded up to a whole bucket.
    """
    usable = [
        (seconds, timespan)
        for seconds, timespan in sorted(levels, reverse=True)
        if period is None or (period % seconds == 0 and start % (seconds * US) == 0)
    ]
    pieces: list[Piece] = []
    raw: list[Window] = []

    def cover(since: int | None, until: int | None, levels: list[tuple[int, int | None]]) -> None:
        for index, (seconds, timespan) in enumerate(levels):
            width = seconds * US
            low = _ceil(since, width) if since is not None else None
            if timespan is not None:
                kept_from = _ceil(now - timespan, width)
                low = kept_from if low is None else max(low, kept_from)
            high = until - until % width if until is not None else None
            if low is not None and high is not None and low >= high:
                continue
            pieces.append((seconds, low, high))
            finer = levels[index + 1 :]
            if low is not None and (since is None or since < low):
                cover(since, low, finer)
            if high is not None and until is not None and high < until:
                cover(high, until, finer)
            return
        raw.append((since, until))

    cover(since, until, usable)
    return Plan(tuple(pieces), tuple(raw))
