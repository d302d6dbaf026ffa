"""Who is asking: tokens from the token file, and what each may see."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nephoscope.api.errors import ApiError
from nephoscope.config import ApiSettings, ConfigError

__all__ = ["ADMIN_ROLE", "Authenticator", "Principal"]

LOG = logging.getLogger(__name__)
ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a token names, and what its roles let it do (``api.admin_roles``,
    ``api.service_roles``)."""

    project_id: str | None
    user_id: str | None
    roles: tuple[str, ...] = ()
    #: Reads and writes every project's data.
    is_admin: bool = False
    #: Posts samples for any project; reads its own, as a member.
    is_service: bool = False

    @property
    def writes_any_project(self) -> bool:
        return self.is_admin or self.is_service


#: The caller when ``api.auth`` is ``none``: sees everything.
ANONYMOUS_ADMIN = Principal(project_id=None, user_id=None, roles=(ADMIN_ROLE,), is_admin=True)


def load_tokens(
    path: Path, admin_roles: Sequence[str] = (ADMIN_ROLE,), service_roles: Sequence[str] = ()
) -> dict[str, Principal]:
    """Read a token file: a mapping of token -> ``project_id``, ``user_id``, ``roles``.

    Raises :class:`ConfigError` naming the file and what is wrong with it.
    """
    try:
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"api.tokens: cannot read {path}: {exc}") from exc
    if data is None:
        data = {}
    if isinstance(data, dict) and isinstance(data.get("tokens"), dict):
        data = data["tokens"]
    if not isinstance(data, dict):
        raise ConfigError(f"api.tokens: {path} must map each token to its owner")
    tokens: dict[str, Principal] = {}
    for token, entry in data.items():
        if not isinstance(token, str) or not token:
            raise ConfigError(f"api.tokens: {path}: token {token!r} is not a non-empty string")
        if not isinstance(entry, dict) or set(entry) - {"project_id", "user_id", "roles"}:
            raise ConfigError(
                f"api.tokens: {path}: each token maps to project_id, user_id and roles"
            )
        roles = entry.get("roles") or []
        if isinstance(roles, str):
            roles = [roles]
        project, user = entry.get("project_id"), entry.get("user_id")
        if not all(isinstance(v, str) for v in roles) or not all(
            v is None or isinstance(v, str) for v in (project, user)
        ):
            raise ConfigError(f"api.tokens: {path}: values must be strings")
        principal = Principal(
            project_id=project,
            user_id=user,
            roles=tuple(roles),
            is_admin=not set(roles).isdisjoint(admin_roles),
            is_service=not set(roles).isdisjoint(service_roles),
        )
        if not principal.is_admin and not project:
            raise ConfigError(f"api.tokens: {path}: a token without admin role needs project_id")
        tokens[token] = principal
    return tokens


class Authenticator:
    """Maps an ``X-Auth-Token`` to its :class:`Principal`, as ``api.auth`` says."""

    def __init__(self, settings: ApiSettings) -> None:
        self.enabled = settings.auth != "none"
        self.tokens: dict[str, Principal] = {}
        if self.enabled:
            if settings.tokens is None:
                raise ConfigError(
                    "api.tokens: api.auth is keystone-less, so a token file is needed "
                    "(or set api.auth: none for a single-user install)"
                )
            self.tokens = load_tokens(settings.tokens, settings.admin_roles, settings.service_roles)
            if not self.tokens:
                LOG.warning(
                    "api.tokens %s holds no token: every request will be refused", settings.tokens
                )
        else:
            LOG.warning(
                "!!! api.auth is none: the HTTP API asks for no token and anyone who reaches "
                "it sees and writes every project's data. Use it for a single-user install only."
            )

    def __call__(self, token: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not token:
            raise ApiError(401, "Authentication required: no X-Auth-Token")
        principal = self.tokens.get(token)
        if principal is None:
            raise ApiError(401, "Authentication required: the X-Auth-Token is not valid")
        return principal
