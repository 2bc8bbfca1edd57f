"""The embedded default's pool of idle SQLite connections (switchyard/db/sqlite3/base.py): a
connection closed outside a transaction serves the next request, on any thread; one closed inside
a transaction, or whose database file has been replaced, is never handed out again."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from switchyard.db.sqlite3.base import DatabaseWrapper, connection_pool


@pytest.fixture(autouse=True)
def _own_files(django_db_blocker: Any) -> Any:
    """These tests open database files of their own, never the test database."""
    with django_db_blocker.unblock():
        yield


def wrapper(path: Path) -> DatabaseWrapper:
    """A Django connection of our backend to its own database file."""
    settings_dict = {**connection.settings_dict, "ENGINE": "switchyard.db.sqlite3", "NAME": str(path),
                     "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 5}, "CONN_MAX_AGE": 0,
                     "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "TIME_ZONE": None}
    return DatabaseWrapper(settings_dict, alias=f"pool-{path.name}")


def raw_on_another_thread(path: Path, sql: str) -> tuple[Any, list[Any]]:
    """(the raw connection, rows of `sql`) from a fresh Django connection on a new thread, closed after."""
    out: list[Any] = []

    def run() -> None:
        db = wrapper(path)
        db.ensure_connection()
        with db.cursor() as cursor:
            cursor.execute(sql)
            rows = cursor.fetchall()
        out.append((db.connection, rows))
        db.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


def test_a_connection_closed_after_a_request_serves_the_next_one_on_another_thread(tmp_path):
    """GIVEN a connection that wrote and committed, then closed WHEN a request on another thread connects
    THEN it gets the same SQLite connection, which sees the committed row."""
    path = tmp_path / "a.sqlite3"
    db = wrapper(path)
    with db.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x INTEGER)")
    with db.cursor() as cursor:
        cursor.execute("INSERT INTO t VALUES (1)")
    first = db.connection
    db.close()
    second, rows = raw_on_another_thread(path, "SELECT x FROM t")
    assert second is first
    assert rows == [(1,)]
    connection_pool(str(path)).clear()


def test_a_connection_closed_inside_a_transaction_is_not_reused_and_its_write_is_gone(tmp_path):
    """GIVEN a connection closed in the middle of a write transaction WHEN the next request connects THEN
    it gets a new connection and the unfinished write is not there."""
    path = tmp_path / "b.sqlite3"
    db = wrapper(path)
    with db.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x INTEGER)")
    db.close()
    db.ensure_connection()
    db.connection.execute("BEGIN IMMEDIATE")
    db.connection.execute("INSERT INTO t VALUES (1)")
    assert db.connection.in_transaction
    abandoned = db.connection
    db.close()
    again, rows = raw_on_another_thread(path, "SELECT count(*) FROM t")
    assert again is not abandoned
    assert rows == [(0,)]
    connection_pool(str(path)).clear()


def test_a_connection_to_a_database_file_since_replaced_is_closed_not_reused(tmp_path):
    """GIVEN an idle pooled connection WHEN its database file is deleted and created anew (as a test
    database is) THEN the next request opens the new file instead of reading the old one."""
    path = tmp_path / "c.sqlite3"
    db = wrapper(path)
    with db.cursor() as cursor:
        cursor.execute("CREATE TABLE old (x INTEGER)")
    old = db.connection
    db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    fresh = wrapper(path)
    with fresh.cursor() as cursor:
        cursor.execute("CREATE TABLE new (x INTEGER)")
    fresh.close()
    raw, rows = raw_on_another_thread(path, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    assert raw is not old
    assert rows == [("new",)]
    connection_pool(str(path)).clear()


def test_the_pool_keeps_at_most_its_size_of_idle_connections(tmp_path, settings):
    """GIVEN a pool of two WHEN three connections close at once THEN two are kept and one is closed."""
    settings.SQLITE_POOL_SIZE = 2
    path = tmp_path / "d.sqlite3"
    dbs = [wrapper(path) for _ in range(3)]
    for db in dbs:
        db.ensure_connection()
    raws = [db.connection for db in dbs]
    for db in dbs:
        db.close()
    pool = connection_pool(str(path))
    kept = [pool.take() for _ in range(3)]
    assert [conn for conn, _ in kept[:2]] == [raws[1], raws[0]]
    assert kept[2] is None
    for conn, _ in kept[:2]:
        conn.close()


def test_statements_are_converted_once_per_process_exactly_as_django_does(tmp_path):
    """The backend's cursor turns "%s" into "?" (and "%%" into "%") as Django's does, and a
    statement seen before is not converted again."""
    from django.db.backends.sqlite3.base import SQLiteCursorWrapper

    from switchyard.db.sqlite3.base import CursorWrapper, _qmark

    db = wrapper(tmp_path / "qmark.sqlite3")
    try:
        with db.cursor() as cursor:
            assert isinstance(cursor.cursor, CursorWrapper)
            cursor.execute("CREATE TABLE t (a TEXT, b TEXT)")
            sql = "INSERT INTO t (a, b) VALUES (%s, '100%%')"
            before = _qmark.cache_info()
            for value in ("x", "y"):
                cursor.execute(sql, [value])
            assert _qmark.cache_info().hits >= before.hits + 1
            cursor.execute("SELECT a, b FROM t WHERE a LIKE %s ORDER BY a", ["%"])
            assert cursor.fetchall() == [("x", "100%"), ("y", "100%")]
        for query in (sql, "SELECT %s, '%%s', %s", "SELECT 1"):
            assert CursorWrapper.convert_query(None, query) == SQLiteCursorWrapper.convert_query(None, query)
    finally:
        db.close()


def test_datetimes_are_adapted_exactly_as_django_does(tmp_path):
    from datetime import UTC, datetime, timedelta, timezone

    from django.db.backends.sqlite3.operations import DatabaseOperations

    db = wrapper(tmp_path / "times.sqlite3")
    stock = DatabaseOperations(db)
    moment = datetime(2026, 12, 7, 3, 4, 5, 678901, tzinfo=UTC)
    for value in (moment, moment.replace(microsecond=0), moment.replace(microsecond=5), moment.replace(year=987),
                  moment.replace(microsecond=413000), moment.astimezone(timezone(timedelta(hours=5, minutes=30))),
                  moment.replace(tzinfo=None), None):
        assert db.ops.adapt_datetimefield_value(value) == stock.adapt_datetimefield_value(value), value
