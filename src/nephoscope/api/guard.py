"""The door of the API: who asks, how much they send, and what an unexpected error costs.

An ASGI middleware, so that it acts before the framework reads anything: the
caller is authenticated from the headers before a byte of the body is read, the
body is refused past ``api.limits.max_body_bytes``, and an error no handler
expected is answered with a 500 in Ceilometer's shape on a connection that stays
open (Starlette's own handler re-raises, and uvicorn then drops the connection).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Collection
from typing import Final

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nephoscope.api.auth import Principal
from nephoscope.api.errors import ApiError, error_response

__all__ = ["Guard", "principal_of", "shorten"]

LOG = logging.getLogger(__name__)

#: Paths anyone may read: the version document and the API's description.
PUBLIC_PATHS: Final = frozenset({"/", "/openapi.json"})
#: Longest text of an error put in a log line (a failed statement can be megabytes).
LOGGED_ERROR_CHARS: Final = 2_000
_STATE_KEY: Final = "principal"


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body grows past the limit; answered 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body larger than {limit} bytes (api.limits.max_body_bytes)")


def shorten(text: str, limit: int = LOGGED_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def principal_of(scope: Scope) -> Principal:
    """The caller :class:`Guard` authenticated for this request."""
    principal: Principal = scope["state"][_STATE_KEY]
    return principal


class Guard:
    """Authenticates, bounds the body, and answers the unexpected; see the module."""

    def __init__(
        self,
        app: ASGIApp,
        authenticate: Callable[[str | None], Principal],
        max_body_bytes: int,
        public_paths: Collection[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        try:
            if scope["path"] not in self.public_paths:
                token = headers.get(b"x-auth-token")
                principal = self.authenticate(token.decode("latin-1") if token else None)
                scope.setdefault("state", {})[_STATE_KEY] = principal
            length = headers.get(b"content-length")
            if length is not None:
                if not length.isdigit():
                    raise ApiError(400, "Content-Length is not a number")
                if int(length) > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
        except (ApiError, HTTPException) as exc:
            await _answer(scope, receive, send, *_status_and_message(exc))
            return
        except Exception as exc:  # an authenticator's own failure
            _log_unexpected(scope, exc)
            await _answer(scope, receive, send, 500, f"internal error: {type(exc).__name__}")
            return

        limit = self.max_body_bytes
        received = 0
        started = False

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except Exception as exc:
            if isinstance(exc, (ApiError, HTTPException)):
                status, text = _status_and_message(exc)
            else:
                status, text = 500, f"internal error: {type(exc).__name__}"
                _log_unexpected(scope, exc)
            if started:
                raise  # half an answer is sent: the connection cannot be saved
            await _answer(scope, receive, send, status, text)


def _status_and_message(exc: ApiError | HTTPException) -> tuple[int, str]:
    if isinstance(exc, ApiError):
        return exc.status, exc.message
    return exc.status_code, str(exc.detail)


#: Frames of an unexpected error's traceback that are logged.
_FRAMES = 8


def _log_unexpected(scope: Scope, exc: Exception) -> None:
    # The innermost frames say where it broke; the framework's outer ones would
    # make a record (one line in a log file) several kilobytes long.
    frames = "".join(traceback.format_tb(exc.__traceback__)[-_FRAMES:])
    LOG.error(
        "unexpected error answering %s %s: %s\n%s",
        scope.get("method"),
        shorten(scope.get("path", ""), 200),
        shorten(f"{type(exc).__name__}: {exc}"),
        frames.rstrip(),
    )


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, text: str) -> None:
    await error_response(status, text)(scope, receive, send)
