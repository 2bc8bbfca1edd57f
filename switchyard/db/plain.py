"""Plain statements on the driver's own cursor, for the few that every lock and write request runs.

Django's cursor wraps each statement in four layers (the cursor wrapper, the execute-wrapper
chain, the error wrapper and, on SQLite, the placeholder conversion), and each `cursor()` call
checks the thread and the connection again. For a lookup by key that was more than what the
database took to run it, and a lock acquire and release pair runs seven statements of its own
besides BEGIN and COMMIT. Here the statements of one unit of work share one driver cursor:

- errors still come out as Django's (`IntegrityError`, `OperationalError`), mapped only when
  one is raised;
- when Django must see every statement (`DEBUG`, `CaptureQueriesContext`, an execute wrapper
  installed by a test or a tool), the statements go through Django's cursor instead, unchanged;
- on SQLite each distinct statement's "%s" becomes "?" once per process (the backend's cache).

The caller's transaction is Django's (`transaction.atomic()`): commit hooks, savepoints and the
SQLite writer queue are untouched. Only the execution of single statements is leaner.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction

from switchyard.db.sqlite3.base import _qmark


class Plain:
    """Statements on one cursor of `connection` (default: the default database's)."""

    __slots__ = ("_convert", "_cursor", "connection")

    def __init__(self, connection: Any = None) -> None:
        self.connection = connection if connection is not None else transaction.get_connection()
        self._cursor: Any = None
        self._convert = self.connection.vendor == "sqlite"

    def __enter__(self) -> Plain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            cursor.close()

    def _open(self) -> Any:
        connection = self.connection
        if connection.queries_logged or connection.execute_wrappers or connection.connection is None:
            # Django's own cursor: it logs, runs the wrappers, and opens the connection if needed.
            self._convert = False
            return connection.cursor()
        return connection.connection.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run `sql` ("%s" parameters, as everywhere in Django); the cursor, to fetch from."""
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self._open()
        try:
            cursor.execute(_qmark(sql) if self._convert else sql, params)
        except Exception:
            with self.connection.wrap_database_errors:
                raise
        return cursor

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self._open()
        try:
            cursor.executemany(_qmark(sql) if self._convert else sql, rows)
        except Exception:
            with self.connection.wrap_database_errors:
                raise

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of `sql`, or None."""
        return self.execute(sql, params).fetchone()  # type: ignore[no-any-return]

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.execute(sql, params).fetchall()  # type: ignore[no-any-return]
