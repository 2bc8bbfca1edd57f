"""The suite's own safety net: on PostgreSQL, the flush after a transactional test survives being
chosen as a deadlock victim (the live server's queries share the test database; see
`flush_retries_deadlocks` in conftest). Without the retry this test errors in its teardown."""
from __future__ import annotations

import re
import threading
import time

import pytest
from django.core.management.color import no_style
from django.core.management.sql import sql_flush
from django.db import connection


@pytest.mark.django_db(transaction=True)
def test_a_flush_chosen_as_deadlock_victim_is_run_again() -> None:
    """GIVEN another session that holds a share lock on the flush's last table and, half a second
    after the test ends, asks for its first table WHEN the test's flush runs THEN PostgreSQL aborts
    the flush (it closes the cycle's first deadlock check) and the teardown runs it again."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no table locks for a flush to deadlock on")
    import psycopg

    tables = re.findall(r'"([^"]+)"', sql_flush(no_style(), connection, allow_cascade=False)[0])
    first, last = tables[0], tables[-1]
    settings = connection.settings_dict
    other = psycopg.connect(host=settings["HOST"], port=settings["PORT"] or 5432, user=settings["USER"],
                            dbname=settings["NAME"])
    other.execute(f'LOCK TABLE "{last}" IN ACCESS SHARE MODE')

    def close_the_cycle() -> None:
        time.sleep(0.5)  # the flush now holds `first` and waits for `last`
        with other:  # commits, releasing `last`, once the flush has been rolled back
            other.execute(f'SELECT 1 FROM "{first}" LIMIT 1')

    threading.Thread(target=close_the_cycle, daemon=True).start()
