"""Cron ticks: seconds, IANA zones and daylight-saving transitions, missed ticks."""

from __future__ import annotations

import datetime as dt

import pytest

from agentkeep.db.errors import InvalidInputError
from agentkeep.db.schedule import check_cron, due_ticks, next_fire

UTC = dt.timezone.utc


def z(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def walk(cron: str, tz: str, start: dt.datetime, n: int) -> list[dt.datetime]:
    out = [next_fire(cron, tz, start)]
    while len(out) < n:
        out.append(next_fire(cron, tz, out[-1]))
    return out


def test_five_and_six_fields():
    assert next_fire("*/5 * * * *", "UTC", z(2026, 1, 1, 12, 2, 30)) == z(2026, 1, 1, 12, 5)
    assert next_fire("*/10 * * * * *", "UTC", z(2026, 1, 1, 12, 0, 5)) == z(2026, 1, 1, 12, 0, 10)
    assert next_fire("30 0 9 * * *", "UTC", z(2026, 1, 1, 12)) == z(2026, 1, 2, 9, 0, 30)
    for bad in ("", "* * * *", "61 * * * * *", "* * * * * * *", "0 0 * * * 0 0"):
        with pytest.raises(InvalidInputError):
            check_cron(bad, "UTC")


def test_zone_is_applied():
    # 09:00 in Kolkata (+05:30) is 03:30 UTC
    assert next_fire("0 9 * * *", "Asia/Kolkata", z(2026, 1, 1)) == z(2026, 1, 1, 3, 30)


def test_spring_forward_fixed_hour_fires_after_the_gap():
    # Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist
    first = next_fire("30 2 * * *", "Europe/Paris", z(2026, 3, 28, 12))
    assert first == z(2026, 3, 29, 1, 30)  # 03:30 CEST: shifted by the gap
    assert next_fire("30 2 * * *", "Europe/Paris", first) == z(2026, 3, 30, 0, 30)  # 02:30 CEST


def test_spring_forward_clock_following_cron_keeps_its_interval():
    ticks = walk("*/30 * * * *", "Europe/Paris", z(2026, 3, 29, 0, 15), 4)
    assert ticks == [z(2026, 3, 29, 0, 30), z(2026, 3, 29, 1), z(2026, 3, 29, 1, 30), z(2026, 3, 29, 2)]


def test_fall_back_fixed_hour_fires_once():
    # Paris, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice
    first = next_fire("30 2 * * *", "Europe/Paris", z(2026, 10, 24, 12))
    assert first == z(2026, 10, 25, 0, 30)  # the first pass (CEST)
    assert next_fire("30 2 * * *", "Europe/Paris", first) == z(2026, 10, 26, 1, 30)  # next day, CET


def test_fall_back_clock_following_cron_fires_in_both_passes():
    ticks = walk("*/30 * * * *", "Europe/Paris", z(2026, 10, 24, 23, 45), 5)
    assert ticks == [z(2026, 10, 25, 0), z(2026, 10, 25, 0, 30), z(2026, 10, 25, 1), z(2026, 10, 25, 1, 30),
                     z(2026, 10, 25, 2)]
    assert all(b - a == dt.timedelta(minutes=30) for a, b in zip(ticks, ticks[1:]))


def test_new_york_transitions():
    # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST
    assert next_fire("15 2 * * *", "America/New_York", z(2026, 3, 7, 12)) == z(2026, 3, 8, 7, 15)
    first = next_fire("15 1 * * *", "America/New_York", z(2026, 10, 31, 12))
    assert first == z(2026, 11, 1, 5, 15)  # 01:15 EDT
    assert next_fire("15 1 * * *", "America/New_York", first) == z(2026, 11, 2, 6, 15)


def test_due_ticks_keeps_the_latest():
    now = z(2026, 1, 1, 12, 0, 30)
    ticks, dropped, following = due_ticks("* * * * *", "UTC", z(2026, 1, 1, 11, 50), now, keep=3)
    assert ticks == [z(2026, 1, 1, 11, 58), z(2026, 1, 1, 11, 59), z(2026, 1, 1, 12)]
    assert dropped == 8 and following == z(2026, 1, 1, 12, 1)
    assert due_ticks("* * * * *", "UTC", z(2026, 1, 1, 12, 1), now, keep=3) == ([], 0, z(2026, 1, 1, 12, 1))


def test_due_ticks_of_a_long_outage_jumps_to_the_end():
    now = z(2026, 1, 3)
    ticks, dropped, following = due_ticks("* * * * * *", "UTC", z(2026, 1, 1), now, keep=2, cap=500)
    assert ticks == [now - dt.timedelta(seconds=1), now] and following == now + dt.timedelta(seconds=1)
    assert abs(dropped - (2 * 86400 - 1)) <= 2  # an estimate past the cap
