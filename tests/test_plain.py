"""Plain statements (switchyard/db/plain.py) behave as Django's cursor does where callers rely on it:
the same rows, Django's exceptions, and every statement visible to query capture."""
from __future__ import annotations

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from switchyard.db.plain import Plain
from workspace.models import Workspace
from workspace.services.workspaces import workspace_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def space(make_user):
    return workspace_create(user=make_user("pia").user, name="plain", intelligence=False)


def test_rows_and_parameters_are_the_ones_djangos_cursor_gives(space):
    """GIVEN a workspace WHEN it is read with "%s" parameters (and a literal "%%") THEN the rows
    equal Django's cursor's, on either database."""
    sql = f"SELECT id, name, event_seq, 'a%%b' FROM {Workspace._meta.db_table} WHERE id = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, [space.id])
        expected = cursor.fetchall()
    with Plain() as db:
        assert db.all(sql, [space.id]) == expected
        assert db.one(sql, [space.id]) == expected[0]
        assert db.one(sql, ["no such workspace"]) is None
    assert expected[0][3] == "a%b"


def test_errors_are_djangos_and_the_transaction_rolls_back(space):
    """GIVEN a duplicate primary key WHEN inserted THEN Django's IntegrityError is raised (what the
    services catch), and the transaction around it rolls back; a bad statement is Django's
    OperationalError or ProgrammingError, not the driver's."""
    table = Workspace._meta.db_table
    with pytest.raises(IntegrityError), transaction.atomic(), Plain() as db:
        db.execute(f"UPDATE {table} SET name = %s WHERE id = %s", ["changed", space.id])
        db.execute(f"INSERT INTO {table} (id, name, intelligence, created_by_id, created_at, event_seq, lock_seq)"
                   " SELECT id, name, intelligence, created_by_id, created_at, 0, 0 FROM "
                   f"{table} WHERE id = %s", [space.id])
    assert Workspace.objects.get(pk=space.id).name == "plain"
    with pytest.raises(DatabaseError) as raised, Plain() as db:
        db.execute("SELECT no_such_column FROM no_such_table")
    assert type(raised.value).__module__ == "django.db.utils"


def test_captured_queries_see_every_statement(space):
    """GIVEN query capture (as tests and DEBUG use) WHEN statements run THEN each one is captured,
    through Django's own cursor."""
    sql = f"SELECT name FROM {Workspace._meta.db_table} WHERE id = %s"
    with CaptureQueriesContext(connection) as captured, Plain() as db:
        db.one(sql, [space.id])
        db.one(sql, [space.id])
    assert len([q for q in captured.captured_queries if "SELECT name" in q["sql"]]) == 2


def test_executemany_writes_every_row(space, make_user):
    """GIVEN rows for executemany WHEN run in a transaction THEN every row is written."""
    from workspace.models import LockWaiter

    user = make_user("quinn").user
    at = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic(), Plain() as db:
        db.executemany(f"INSERT INTO {LockWaiter._meta.db_table} (workspace_id, user_id, alive_until, created_at)"
                       " VALUES (%s, %s, %s, %s)",
                       [[space.id, user.pk, at, at] for _ in range(3)])
    assert LockWaiter.objects.filter(workspace_id=space.id).count() == 3
