"""The demo's application database: the SQLite file the analyst agent queries (customers,
plans, monthly revenue) and writes approved reports to (outbox). Its rows are fixed, so every
copy holds the same data.

    python -m agentkeep.os.demo.data ./agentkeep-demo/app.db

`ensure_app_db(path)` creates and loads it once; later calls find it and leave it alone."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from agentkeep.db.errors import InvalidInputError

VERSION = "1"

SCHEMA = """
create table plans (
  name text primary key,            -- starter, team, business
  monthly_price_usd integer not null,
  seats integer not null            -- seats included
);
create table customers (
  id integer primary key,
  name text not null,
  country text not null,            -- ISO 3166 alpha-2
  plan text not null references plans(name),
  signed_up text not null,          -- month, YYYY-MM
  churned text                      -- month it cancelled (YYYY-MM), null while active
);
create table monthly_revenue (
  month text not null,              -- YYYY-MM
  plan text not null references plans(name),
  active_customers integer not null,
  new_customers integer not null,
  churned_customers integer not null,
  mrr_usd integer not null,         -- active customers x the plan's monthly price
  primary key (month, plan)
);
create table outbox (
  id integer primary key,
  to_address text not null,
  subject text not null,
  body text not null,
  created_at text not null default (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
create table demo_meta (key text primary key, value text not null);
"""

PLANS = [("starter", 29, 3), ("team", 99, 10), ("business", 299, 50)]

MONTHS = ["2025-01", "2025-02", "2025-03", "2025-04", "2025-05", "2025-06"]

CUSTOMERS = [  # name, country, plan, signed up, churned
    ("Alder Analytics", "US", "team", "2025-01", None),
    ("Birchwood Bakery", "GB", "starter", "2025-01", "2025-03"),
    ("Cobalt Freight", "DE", "business", "2025-01", None),
    ("Delta Dental Group", "US", "team", "2025-01", None),
    ("Ember Studios", "FR", "starter", "2025-01", None),
    ("Fjord Outfitters", "NO", "team", "2025-01", "2025-05"),
    ("Granite Legal", "US", "business", "2025-01", None),
    ("Harbor Health", "CA", "team", "2025-02", None),
    ("Iris Florists", "NL", "starter", "2025-02", None),
    ("Juniper Schools", "US", "business", "2025-02", None),
    ("Kestrel Drones", "DE", "team", "2025-02", "2025-04"),
    ("Lumen Solar", "ES", "starter", "2025-02", None),
    ("Maple Accounting", "CA", "team", "2025-03", None),
    ("Nimbus Games", "JP", "starter", "2025-03", "2025-06"),
    ("Orchid Hotels", "SG", "business", "2025-03", None),
    ("Pioneer Robotics", "US", "team", "2025-03", None),
    ("Quarry Architects", "GB", "starter", "2025-04", None),
    ("Redwood Realty", "US", "team", "2025-04", None),
    ("Saffron Kitchens", "IN", "starter", "2025-04", None),
    ("Tidal Energy", "AU", "business", "2025-04", None),
    ("Umber Coffee", "BR", "starter", "2025-05", None),
    ("Vantage Media", "US", "team", "2025-05", None),
    ("Willow Vets", "IE", "starter", "2025-05", None),
    ("Xenon Labs", "CH", "business", "2025-06", None),
    ("Yarrow Yoga", "US", "starter", "2025-06", None),
    ("Zephyr Airlines", "FR", "team", "2025-06", None),
]


def revenue_rows() -> list[tuple[str, str, int, int, int, int]]:
    """Per month and plan: active, new and churned customers and the MRR, from CUSTOMERS (a
    customer counts as active from the month it signed up until the month it churned)."""
    price = {name: p for name, p, _ in PLANS}
    rows = []
    for month in MONTHS:
        for plan, _, _ in PLANS:
            mine = [c for c in CUSTOMERS if c[2] == plan]
            active = sum(1 for c in mine if c[3] <= month and (c[4] is None or c[4] > month))
            new = sum(1 for c in mine if c[3] == month)
            churned = sum(1 for c in mine if c[4] == month)
            rows.append((month, plan, active, new, churned, active * price[plan]))
    return rows


def ensure_app_db(path: str | os.PathLike) -> bool:
    """Create and load the app database at `path` unless it is already there; True when this
    call created it. It is built in a temporary file and linked into place, so a crash never
    leaves half a database and two demos starting at once keep one copy."""
    path = Path(path)
    if path.exists():
        _check_ours(path)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".app-", suffix=".db", dir=path.parent)
    os.close(fd)
    try:
        _load(Path(tmp))
        try:
            os.link(tmp, path)  # fails when another process got there first
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _load(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(SCHEMA)
        conn.executemany("insert into plans values (?, ?, ?)", PLANS)
        conn.executemany("insert into customers (name, country, plan, signed_up, churned) values (?, ?, ?, ?, ?)",
                         CUSTOMERS)
        conn.executemany("insert into monthly_revenue values (?, ?, ?, ?, ?, ?)", revenue_rows())
        conn.execute("insert into demo_meta values ('version', ?)", (VERSION,))


def _check_ours(path: Path) -> None:
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            conn.execute("select value from demo_meta where key = 'version'").fetchone()
    except sqlite3.Error:
        raise InvalidInputError(f"{path} is not the demo's app database; move it away or pick another --data-dir") \
            from None


def table_counts(path: str | os.PathLike) -> dict[str, int]:
    """Rows per table, read-only."""
    with contextlib.closing(sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)) as conn:
        return {t: conn.execute(f"select count(*) from {t}").fetchone()[0]
                for t in ("plans", "customers", "monthly_revenue", "outbox")}


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "agentkeep-demo/app.db"
    made = ensure_app_db(target)
    print(f"{'created' if made else 'kept'} {target}: {table_counts(target)}")
