"""Cron for schedules (croniter, on local wall-clock times in an IANA zone).

A cron has 5 fields (minute hour day month weekday) or 6 with seconds first
(`*/10 * * * * *`: every ten seconds). Daylight-saving transitions:
- a wall time the clocks skip (spring forward) fires just after the gap, shifted by it, as
  the clocks are (02:30 on a night that jumps from 02:00 to 03:00 fires at 03:30);
- a wall time the clocks repeat (fall back) fires once, at its first pass, when the hour
  field is fixed (`30 1 * * *`); a cron whose hour field is `*` follows the clock and fires
  in both passes (`*/15 * * * *` keeps firing every 15 minutes through the repeated hour).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from agentkeep.db.errors import InvalidInputError

UTC = dt.timezone.utc
MAX_SHIFT = dt.timedelta(hours=3)  # more than any zone's offset change at one transition
_PARSED = threading.local()  # per thread (an iterator has a position): expression -> croniter
_PARSED_MAX = 512


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidInputError(f"unknown timezone {timezone!r}; use an IANA name such as 'Europe/Paris'") from None


def _croniter_form(cron: str) -> str:
    """croniter reads seconds as the sixth field; ours come first, as in most schedulers."""
    fields = cron.split()
    return " ".join(fields[1:] + fields[:1]) if len(fields) == 6 else cron


def check_cron(cron: str, timezone: str) -> None:
    _zone(timezone)
    if not isinstance(cron, str) or len(cron.split()) not in (5, 6) or not croniter.is_valid(_croniter_form(cron)):
        raise InvalidInputError(f"invalid cron expression {cron!r}; expected 5 fields ('*/5 * * * *') or 6 with "
                                "seconds first ('*/10 * * * * *')")


def _follows_clock(cron: str) -> bool:
    fields = cron.split()
    return fields[len(fields) - 4] in ("*", "*/1")


def next_fire(cron: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The next time the cron fires strictly after `after`, as UTC."""
    zone = _zone(timezone)
    after = after.astimezone(UTC)
    both_passes = _follows_clock(cron)
    # when the clocks fall back soon, wall time goes back by `repeat`: the earliest instant
    # after `after` may then come from a wall time before `after`'s
    repeat = max(dt.timedelta(0), after.astimezone(zone).utcoffset() - (after + MAX_SHIFT).astimezone(zone).utcoffset())
    it = _iterator(cron, after.astimezone(zone).replace(tzinfo=None) - repeat)
    best: dt.datetime | None = None
    best_wall: dt.datetime | None = None
    for _ in range(100_000):
        candidate = it.get_next(dt.datetime)
        if best_wall is not None and candidate > best_wall + repeat:
            break
        for fold in (0, 1) if both_passes else (0,):
            instant = candidate.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if instant > after and (best is None or instant < best):
                best, best_wall = instant, candidate
    if best is None:
        raise InvalidInputError(f"cron {cron!r} never fires after {after.isoformat()}")
    return best


def _iterator(cron: str, start: dt.datetime) -> croniter:
    """A croniter at `start`, reused: parsing the expression costs nine times a step."""
    cache = getattr(_PARSED, "cache", None)
    if cache is None:
        cache = _PARSED.cache = OrderedDict()
    it = cache.pop(cron, None)
    if it is None:
        it = croniter(_croniter_form(cron), start)
    else:
        it.set_current(start, force=True)
    cache[cron] = it
    if len(cache) > _PARSED_MAX:
        cache.popitem(last=False)
    return it


def due_ticks(cron: str, timezone: str, first: dt.datetime, now: dt.datetime, keep: int,
              cap: int = 10_000) -> tuple[list[dt.datetime], int, dt.datetime]:
    """The ticks from `first` (a tick) up to `now`: (the latest `keep` of them, how many
    earlier ones were left out, the first tick after `now`). Past `cap` ticks the walk jumps
    close to `now` and the count left out is an estimate."""
    ticks: list[dt.datetime] = []
    dropped = walked = 0
    tick = first
    while tick <= now:
        ticks.append(tick)
        if len(ticks) > keep:
            ticks.pop(0)
            dropped += 1
        walked += 1
        if walked == cap:  # a long outage of a frequent schedule: skip to the last few ticks
            interval = (tick - first) / (cap - 1)
            resume = now - interval * (keep + 1)
            if resume > tick:
                dropped += len(ticks) + int((resume - tick) / interval)
                ticks, tick = [], resume
        tick = next_fire(cron, timezone, tick)
    return ticks, dropped, tick
