"""The one clock that deadlines are measured on: the database's.

Locks, leases, back-offs and expiries are decided on it, never on a web or worker process's own
clock, so that any number of processes (on any number of machines, with PostgreSQL) agree.
"""
from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection


def db_now() -> datetime:
    """The database's current time, aware, in UTC.

    PostgreSQL: `clock_timestamp()`, not `now()`, which is when the transaction began (maybe long
    before the workspace row lock was granted). SQLite is embedded: its 'now' is this machine's
    system clock, read by the library in this process and cut to milliseconds, so the same reading
    is taken here without a statement (every lock and write asked for it, often twice)."""
    if connection.vendor == "sqlite":
        now = datetime.now(UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()" if connection.vendor == "postgresql" else "SELECT CURRENT_TIMESTAMP")
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
