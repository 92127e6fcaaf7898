"""Cron helpers for schedules (croniter)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from agentkeep.db.errors import InvalidInputError


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInputError(f"unknown timezone {timezone!r}; use an IANA name such as 'Europe/Paris'") from None


def check_cron(cron: str, timezone: str) -> None:
    _zone(timezone)
    if not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidInputError(f"invalid cron expression {cron!r}; expected 5 fields, e.g. '*/5 * * * *'")


def next_fire(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The next time the cron fires strictly after `after`, as UTC."""
    local = after.astimezone(_zone(timezone))
    return croniter(cron, local).get_next(dt.datetime).astimezone(dt.timezone.utc)
