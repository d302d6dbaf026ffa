"""Rollups: what a store keeps per series and time bucket, and when statistics may use them.

A rollup row aggregates one series' samples in one bucket of one granularity:
count, sum, min, max, sum of squares, and the first and last sample (time and
value). Rows merge: two partial aggregates of the same samples' halves make the
aggregate of the whole, which is what lets ingest add a batch to a stored row,
and statistics combine rollups with raw samples at the edges of a range.

Times here are integer microseconds since the epoch; granularities are seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "Level",
    "Partial",
    "Piece",
    "Plan",
    "Row",
    "Window",
    "accumulate",
    "derivations",
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
    series, granularity and bucket; points in buckets before a level's earliest skip it.

    Among points at equal times the earlier in the sequence is the first and the
    later the last, as :func:`merge` in arrival order would have it.
    """
    if not len(series_ids) == len(stamps) == len(volumes) == len(levels):
        raise ValueError("accumulate needs a series id, a time, a volume and levels per point")
    if not stamps:
        return []
    ids = np.asarray(series_ids, dtype=np.int64)
    times = np.asarray(stamps, dtype=np.int64)
    values = np.asarray(volumes, dtype=np.float64)
    if levels.count(levels[0]) == len(levels):
        # Every point's meter keeps the same levels (the usual case): one group.
        groups: dict[tuple[Level, ...], list[int] | None] = {levels[0]: None}
    else:
        groups = {}
        for index, kept in enumerate(levels):
            members = groups.setdefault(kept, [])
            assert members is not None
            members.append(index)
    rows: list[Row] = []
    for kept, indexes in groups.items():
        if indexes is None:
            points = ids, times, values
        else:
            picked = np.asarray(indexes)
            points = ids[picked], times[picked], values[picked]
        for seconds, earliest in kept:
            rows.extend(_level_rows(seconds, earliest, *points))
    return rows


def _level_rows(
    seconds: int,
    earliest: int | None,
    ids: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
) -> list[Row]:
    if earliest is not None:
        kept = times >= earliest
        if not kept.all():
            ids, times, values = ids[kept], times[kept], values[kept]
    count = len(times)
    if not count:
        return []
    buckets = times - times % (seconds * US)
    # lexsort is stable: points at equal times stay in arrival order.
    order = np.lexsort((times, ids, buckets))
    ids, buckets, times, values = ids[order], buckets[order], times[order], values[order]
    starts_group = np.empty(count, dtype=bool)
    starts_group[0] = True
    np.not_equal(ids[1:], ids[:-1], out=starts_group[1:])
    starts_group[1:] |= buckets[1:] != buckets[:-1]
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], count) - 1
    with np.errstate(over="ignore", under="ignore"):
        # Squares overflow to infinity and underflow to 0, as in SQL and plain Python.
        squares = values * values
    return list(
        zip(
            ids[starts].tolist(),
            itertools.repeat(seconds),
            buckets[starts].tolist(),
            np.diff(np.append(starts, count)).tolist(),
            np.add.reduceat(values, starts).tolist(),
            np.minimum.reduceat(values, starts).tolist(),
            np.maximum.reduceat(values, starts).tolist(),
            np.add.reduceat(squares, starts).tolist(),
            times[starts].tolist(),
            values[starts].tolist(),
            times[ends].tolist(),
            values[ends].tolist(),
        )
    )


def derivations(granularities: Iterable[int]) -> dict[int, int]:
    """The levels a staging writer derives instead of writing: level -> the level
    whose rows it is summed from.

    A level derives from the coarsest finer level that divides it, unless that is
    the finest level: a level holds about a row per series and bucket, and the
    finest holds nearly a row per sample, too many to sum from or to read in a
    coarse level's stead. Chains end at a level that is written: with 1 minute,
    1 hour, 1 day and 1 week, the day and the week derive from the hour.
    """
    levels = sorted(set(granularities))
    derived: dict[int, int] = {}
    for index, seconds in enumerate(levels[2:], start=2):
        divisors = [finer for finer in levels[1:index] if seconds % finer == 0]
        if divisors:
            source = divisors[-1]
            derived[seconds] = derived.get(source, source)
    return derived


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
