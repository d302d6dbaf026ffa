"""Serving the API with uvicorn: in the foreground (``nephoscope api``) or in a thread (``run``)."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any, Final

import uvicorn

from nephoscope.api.app import create_app
from nephoscope.api.auth import Authenticator
from nephoscope.config import Settings, is_loopback, refuse_default_secret
from nephoscope.storage.base import Store

__all__ = ["ApiServer", "app_from_environment", "check_exposure", "serve_workers", "settle_heap"]

LOG = logging.getLogger(__name__)


#: Allocations between two young-generation collections in a serving process
#: (CPython's default is 700; 3.13 raised it to 2,000).
YOUNG_COLLECTION_THRESHOLD: Final = 10_000


def settle_heap() -> None:
    """Take what start-up built (modules, routes, the store's engine) out of the
    garbage collector's full collections, for the life of the process, and collect
    the young generation less often.

    A grouped statistics answer holds thousands of objects, enough to set off a
    full collection at nearly every request; each one walked the whole start-up
    heap again, about as long as the query itself took. Young collections, some
    forty per such answer at CPython's default threshold, cost another 5 to 7%
    of it. Call it once, in the process that serves, when start-up is done.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def check_exposure(settings: Settings) -> None:
    """Raise :class:`ConfigError` if the API would verify posted samples with the
    published default secret on an address beyond this machine."""
    if not is_loopback(settings.api.host):
        refuse_default_secret(settings, f"the API listens on {settings.api.host}")


class ApiServer:
    """The API on ``api.host:api.port``; :meth:`start` in a thread, :meth:`stop` from another.

    The authenticator is built at construction, so a missing or bad token file
    raises :class:`~nephoscope.config.ConfigError` before anything is served.
    """

    def __init__(self, settings: Settings, store: Store) -> None:
        check_exposure(settings)
        self.settings = settings
        self.app = create_app(settings, store, Authenticator(settings.api))
        config = uvicorn.Config(
            self.app,
            host=settings.api.host,
            port=settings.api.port,
            log_level="warning",
            # uvicorn's own logging config would write its records in its own format:
            # without it they go to ours (one line each in a log file).
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.api.host}:{self.settings.api.port}"

    def serve(self) -> None:
        """Serve until stopped (uvicorn handles Ctrl-C itself)."""
        self.server.run()

    def start(self, timeout: float = 10.0) -> None:
        """Serve in a daemon thread (uvicorn leaves signals alone off the main thread).

        Returns once the socket listens; raises RuntimeError if it does not in ``timeout``.
        """
        thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"the API could not listen on {self.url}")

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


def serve_workers(settings: Settings, config: str | None, workers: int) -> None:
    """Serve with ``workers`` processes sharing the socket (the token file is checked first)."""
    import os

    from nephoscope.config import CONFIG_ENV

    check_exposure(settings)
    Authenticator(settings.api)
    if config is not None:
        os.environ[CONFIG_ENV] = config
    uvicorn.run(
        "nephoscope.api.server:app_from_environment",
        factory=True,
        host=settings.api.host,
        port=settings.api.port,
        workers=workers,
        log_level="warning",
        log_config=None,  # as in ApiServer; each worker sets up ours in app_from_environment
        access_log=False,
        lifespan="off",
    )


def app_from_environment() -> Any:
    """An app from the configuration ``NEPHOSCOPE_CONFIG`` names: each uvicorn worker's own.

    Used by ``nephoscope api --workers N``, where every worker process opens its
    own store.
    """
    from nephoscope import logs
    from nephoscope.config import load_settings
    from nephoscope.storage import open_store

    settings = load_settings(None)
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings, open_store(settings.store))
    settle_heap()
    return app
