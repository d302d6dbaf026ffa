"""Errors as Ceilometer's v2 API sends them: ``{"error_message": {"faultstring": ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = ["ApiError", "ClientError", "error_body", "error_response", "install_handlers"]


class ApiError(Exception):
    """An error answered with ``status`` and Ceilometer's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientError(ApiError):
    """400: the query cannot be answered as asked."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


def error_body(message: str, *, client: bool = True) -> dict[str, Any]:
    return {
        "error_message": {
            "faultcode": "Client" if client else "Server",
            "faultstring": message,
            "debuginfo": None,
        }
    }


def error_response(status: int, message: str) -> JSONResponse:
    """Ceilometer's error answer (a 401 says how to authenticate)."""
    headers = {"WWW-Authenticate": 'Keystone uri="none"'} if status == 401 else None
    return JSONResponse(error_body(message, client=status < 500), status, headers=headers)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "query")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "Invalid input: " + "; ".join(parts)


def read_timed_out(exc: OperationalError) -> bool:
    """Whether the store stopped a read past ``store.read_timeout``."""
    # PostgreSQL cancels the statement (QueryCanceled); SQLite's progress handler
    # interrupts it.
    return type(exc.orig).__name__ == "QueryCanceled" or str(exc.orig) == "interrupted"


def install_handlers(app: FastAPI) -> None:
    """Answer the errors of bad requests with Ceilometer's body (the unexpected ones
    are :class:`~nephoscope.api.guard.Guard`'s)."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(OperationalError)
    async def _store_error(_request: Request, exc: OperationalError) -> JSONResponse:
        if not read_timed_out(exc):
            raise exc  # answered as unexpected (a 500 logged) by the guard
        return error_response(
            400, "The query ran longer than store.read_timeout allows: ask for less"
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _describe(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = "The resource could not be found."
        return error_response(exc.status_code, message)
