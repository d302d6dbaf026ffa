"""The one error for a message that cannot be metered."""

from __future__ import annotations


class RejectedMessage(ValueError):
    """A message (or one meter message in it) that is dead-lettered with ``reason``."""

    def __init__(self, reason: str, message_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.message_id = message_id
