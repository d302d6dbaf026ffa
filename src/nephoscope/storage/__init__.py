"""Sample stores: pick a driver by URL scheme and open it.

Drivers are entry points in the ``nephoscope.storage`` namespace, named by the
URL scheme without its driver part (``postgresql+psycopg://`` -> ``postgresql``).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError
from stevedore import DriverManager
from stevedore.exception import NoMatches

from nephoscope.config import StoreSettings
from nephoscope.storage.base import (
    DeadLetter,
    MeterInfo,
    ResourceInfo,
    SampleFilter,
    Statistic,
    Store,
    StoredDeadLetter,
    StoredSample,
    StoreStatus,
    WriteResult,
)

__all__ = [
    "NAMESPACE",
    "DeadLetter",
    "MeterInfo",
    "ResourceInfo",
    "SampleFilter",
    "Statistic",
    "Store",
    "StoreError",
    "StoreStatus",
    "StoredDeadLetter",
    "StoredSample",
    "WriteResult",
    "known_schemes",
    "open_store",
    "url_scheme",
]

NAMESPACE: Final = "nephoscope.storage"


class StoreError(Exception):
    """A store cannot be opened: unknown URL scheme, or its driver failed to load."""


def url_scheme(url: str) -> str:
    """The driver name of ``url``: its scheme without the ``+dbapi`` part."""
    scheme, separator, _ = url.partition("://")
    if not separator or not scheme:
        raise StoreError(f"store URL {url!r} has no scheme (like sqlite:///path/to/file.db)")
    return scheme.partition("+")[0].lower()


def known_schemes() -> list[str]:
    """The URL schemes that installed store drivers serve."""
    return sorted({ep.name for ep in entry_points(group=NAMESPACE)})


def open_store(settings: StoreSettings, *, check_schema: bool = True) -> Store:
    """Open the store ``settings.url`` names and, if ``auto_upgrade``, migrate it.

    Without ``auto_upgrade`` a schema that is not the newest is a :class:`StoreError`
    (unless ``check_schema`` is false, as for ``nephoscope db upgrade`` itself).
    """
    scheme = url_scheme(settings.url)

    def failed(_manager: Any, entry_point: Any, exc: BaseException) -> None:
        raise StoreError(
            f"store driver {entry_point.name!r} ({entry_point.value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc

    try:
        manager = DriverManager(NAMESPACE, scheme, on_load_failure_callback=failed)
    except NoMatches:
        known = ", ".join(known_schemes()) or "none installed"
        raise StoreError(
            f"no store driver for URL scheme {scheme!r} (known schemes: {known})"
        ) from None
    # Built here rather than by stevedore so that the driver's own errors (a bad
    # URL, a missing database driver) reach the caller unwrapped.
    store: Store = manager.driver(settings)
    try:
        if settings.auto_upgrade:
            store.upgrade()
        elif check_schema:
            current, head = store.schema_revisions()
            if current != head:
                raise StoreError(
                    f"the store's schema is at revision {current or 'none'}, this version "
                    f"needs {head}: run `nephoscope db upgrade` (store.auto_upgrade is off)"
                )
    except SQLAlchemyError as exc:
        store.close()
        raise StoreError(f"cannot open the store: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        store.close()
        raise
    return store
