"""The one clock that deadlines are measured on: the database's.

Locks, leases, back-offs and expiries are decided on it, never on a web or worker process's own
clock, so that any number of processes (on any number of machines, with PostgreSQL) agree.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.db import connection


def db_now(conn: Any = None) -> datetime:
    """The database's current time, aware, in UTC. `conn`: the connection to ask, if the caller
    has it at hand (default: the default database's).

    PostgreSQL: `clock_timestamp()`, not `now()`, which is when the transaction began (maybe long
    before the workspace row lock was granted). SQLite is embedded: its 'now' is this machine's
    system clock, read by the library in this process and cut to milliseconds, so the same reading
    is taken here without a statement (every lock and write asked for it, often twice)."""
    conn = connection if conn is None else conn
    if conn.vendor == "sqlite":
        now = datetime.now(UTC)
        return now.replace(microsecond=now.microsecond // 1000 * 1000)
    with conn.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()" if conn.vendor == "postgresql" else "SELECT CURRENT_TIMESTAMP")
        value = cursor.fetchone()[0]
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
