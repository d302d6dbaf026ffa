"""The HTTP query API: Ceilometer's v2 API, tenant-scoped (``nephoscope api``)."""

from nephoscope.api.app import create_app

__all__ = ["create_app"]
