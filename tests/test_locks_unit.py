"""The lock manager in-process: path rules, the database clock, fencing decisions, the sweep,
and the query count of the list endpoint."""
from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from workspace.access import workspace_for
from workspace.errors import Conflict, Gone, Locked
from workspace.models import Event, Lock, Role
from workspace.services import files as file_svc
from workspace.services import locks as svc
from workspace.services.workspaces import member_set, workspace_create


@pytest.fixture
def setup(make_user, make_agent):
    owner = make_user("olivia")
    ada = make_agent("ada", created_by=owner.user)
    bert = make_agent("bert", created_by=owner.user)
    ws = workspace_create(user=owner.user, name="unit", intelligence=False)
    owner_access = workspace_for(owner.user, ws.id)
    for agent in (ada, bert):
        member_set(access=owner_access, username=agent.username, role=Role.EDITOR)
    return {
        "ws": ws, "owner": owner, "ada": ada, "bert": bert,
        "ada_access": workspace_for(ada.user, ws.id), "bert_access": workspace_for(bert.user, ws.id),
    }


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("a.txt", "a.txt", True),
    ("src/", "src/a.py", True),
    ("src/a.py", "src/", True),
    ("src/", "src/deep/", True),
    ("src/", "srcs/a.py", False),
    ("src", "src/", False),
    ("src/a.py", "src/b.py", False),
    ("Src/", "src/a.py", False),
])
def test_paths_overlap(a, b, expected):
    """GIVEN two lock paths THEN they overlap exactly when equal or one is a subtree holding the other."""
    assert svc.paths_overlap(a, b) is expected
    assert svc.paths_overlap(b, a) is expected


def test_covering_paths():
    """GIVEN a path THEN the lock paths covering it are itself and every subtree above it."""
    assert svc.covering_paths("a/b/c.txt") == ["a/b/c.txt", "a/", "a/b/"]
    assert svc.covering_paths("a/b/") == ["a/b/", "a/"]
    assert svc.covering_paths("top.txt") == ["top.txt"]


@pytest.mark.django_db
def test_db_now_is_the_database_clock_in_utc():
    """GIVEN the database WHEN its time is read twice THEN it is UTC, current and moves forward."""
    first = svc.db_now()
    second = svc.db_now()
    assert first.tzinfo is not None and first.utcoffset() == timedelta(0)
    assert abs((first - datetime.now(UTC)).total_seconds()) < 5
    assert second >= first


@pytest.mark.django_db
def test_db_now_lies_between_two_readings_of_the_databases_own_clock():
    """GIVEN the database WHEN db_now is read between two readings of the database's own clock
    (SQLite's 'now', PostgreSQL's clock_timestamp()) THEN it lies between them: it is that clock,
    read on SQLite without a statement and at SQLite's millisecond resolution, so times written by
    either compare."""
    from django.db import connection

    def read() -> datetime:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT clock_timestamp()")
                return cursor.fetchone()[0]
            cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)

    before = read()
    ours = svc.db_now()
    after = read()
    assert before <= ours <= after
    assert ours.microsecond % 1000 == 0 or connection.vendor != "sqlite"


@pytest.mark.django_db
def test_moves_between_separately_locked_paths_need_one_grant(setup):
    """GIVEN ada holding two paths through two separate grants WHEN she moves one onto the other
    with either token THEN it is refused (one token cannot speak for the other grant); the same
    move under one batch grant is accepted."""
    ada = setup["ada_access"]
    file_svc.file_write(access=ada, path="in/x.txt", content=b"x")
    first = svc.lock_acquire(access=ada, paths=["in/x.txt"], ttl_seconds=60)[0]
    second = svc.lock_acquire(access=ada, paths=["out/x.txt"], ttl_seconds=60)[0]
    for token in (first.token, second.token):
        with pytest.raises(Conflict) as refused:
            file_svc.file_move(access=ada, src="in/x.txt", dst="out/x.txt", lock_token=token)
        assert refused.value.code == "stale_lock_token"
    for held in (first, second):
        svc.lock_release(access=ada, lock_id=held.id)
    batch = svc.lock_acquire(access=ada, paths=["out/x.txt", "in/x.txt"], ttl_seconds=60)
    assert {lock.token for lock in batch} == {batch[0].token}
    tomb, moved = file_svc.file_move(access=ada, src="in/x.txt", dst="out/x.txt", lock_token=batch[0].token)
    assert moved.lock_token == batch[0].token and tomb.lock_token == batch[0].token


@pytest.mark.django_db
def test_a_token_is_checked_only_on_the_paths_its_grant_covers(setup):
    """GIVEN ada's lock on inbox/job WHEN she moves it to an unlocked path that once had a newer
    grant of someone else's THEN the move is accepted: the token fences inbox/job, not the
    destination, which she never locked."""
    ada, bert = setup["ada_access"], setup["bert_access"]
    file_svc.file_write(access=ada, path="inbox/job", content=b"j")
    held = svc.lock_acquire(access=ada, paths=["inbox/job"], ttl_seconds=60)[0]
    other = svc.lock_acquire(access=bert, paths=["done/job"], ttl_seconds=60)[0]
    svc.lock_release(access=bert, lock_id=other.id)
    assert other.token > held.token
    _, moved = file_svc.file_move(access=ada, src="inbox/job", dst="done/job", lock_token=held.token)
    assert moved.lock_token == held.token


@pytest.mark.django_db
def test_a_writes_token_is_looked_up_among_the_grants_on_its_paths(setup):
    """GIVEN ada's subtree lock on src/ and a newer grant of hers elsewhere WHEN she writes inside
    src/ THEN the subtree's token is accepted and the other grant's is refused; the lookup of her
    grants by token goes through the paths (the path and token index), there being no index by
    token alone."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ada = setup["ada_access"]
    held = svc.lock_acquire(access=ada, paths=["src/"], ttl_seconds=60)[0]
    elsewhere = svc.lock_acquire(access=ada, paths=["docs/readme.md"], ttl_seconds=60)[0]
    assert elsewhere.token > held.token
    with pytest.raises(Conflict) as refused:
        file_svc.file_write(access=ada, path="src/app/main.py", content=b"x", lock_token=elsewhere.token)
    assert refused.value.code == "stale_lock_token"
    with CaptureQueriesContext(connection) as queries:
        written = file_svc.file_write(access=ada, path="src/app/main.py", content=b"x", lock_token=held.token)
    assert written.version.lock_token == held.token
    lookups = [q["sql"] for q in queries if q["sql"].startswith("SELECT path FROM") and "token" in q["sql"]]
    assert len(lookups) == 1, [q["sql"] for q in queries]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is read whole by cost
        sql = lookups[0]
        cursor.execute(f"EXPLAIN {sql}" if connection.vendor == "postgresql" else f"EXPLAIN QUERY PLAN {sql}")
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "lock_path_token_idx" in plan, (sql, plan)


@pytest.mark.django_db
def test_the_sweep_expires_due_locks_once_and_records_them(setup):
    """GIVEN one lock past its expiry and one still live WHEN the sweep runs twice THEN only the
    due lock ends, as expired at its own expiry, with exactly one `lock.expired` event."""
    ada = setup["ada_access"]
    due = svc.lock_acquire(access=ada, paths=["old.txt"], ttl_seconds=60)[0]
    live = svc.lock_acquire(access=ada, paths=["new.txt"], ttl_seconds=60)[0]
    past = svc.db_now() - timedelta(seconds=1)
    Lock.objects.filter(pk=due.pk).update(expires_at=past)
    assert svc.lock_sweep() == 1
    assert svc.lock_sweep() == 0
    due.refresh_from_db()
    live.refresh_from_db()
    assert due.state == Lock.State.EXPIRED and due.ended_at == past
    assert live.state == Lock.State.ACTIVE
    events = list(Event.objects.filter(workspace=setup["ws"], type="lock.expired"))
    assert len(events) == 1 and events[0].data["lock"] == due.id and events[0].actor is None
    with pytest.raises(Gone):
        svc.lock_renew(access=ada, lock_id=due.id)


@pytest.mark.django_db
def test_the_sweeps_lock_queries_read_the_live_locks_not_the_history(setup):
    """GIVEN a workspace with a history of ended locks and one due lock WHEN the sweep looks for
    due locks (across workspaces, then in the workspace) THEN every query on the lock table reads
    the index of the active locks, never one that holds the workspace's whole lock history."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ada = setup["ada_access"]
    for i in range(20):
        svc.lock_release(access=ada, lock_id=svc.lock_acquire(access=ada, paths=[f"h{i}.txt"], ttl_seconds=60)[0].id)
    due = svc.lock_acquire(access=ada, paths=["due.txt"], ttl_seconds=60)[0]
    Lock.objects.filter(pk=due.pk).update(expires_at=svc.db_now() - timedelta(seconds=1))
    with CaptureQueriesContext(connection) as queries:
        assert svc.lock_sweep() == 1
    selects = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and '"workspace_lock"' in q["sql"]
               .replace("workspace_lock ", '"workspace_lock" ') and "expires_at" in q["sql"]]
    assert len(selects) == 2, [q["sql"] for q in queries]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # A table this small is read whole by cost; what matters is which index is usable.
            cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in selects:
            cursor.execute(f"EXPLAIN {sql}" if connection.vendor == "postgresql" else f"EXPLAIN QUERY PLAN {sql}")
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            lock_part = plan.split("alive_until")[0]  # the sweep's first query also reads waiters
            # The index of the active locks (the only one); never one that holds the history.
            assert "lock_active_path_unique" in lock_part, (sql, plan)
            assert "lock_token_idx" not in plan and "lock_path_token_idx" not in plan, (sql, plan)


@pytest.mark.django_db
def test_a_due_lock_is_gone_at_acquire_even_before_the_sweep(setup):
    """GIVEN ada's lock past its expiry, not yet swept WHEN bert asks for the path THEN he gets it,
    and ada's expiry is recorded first, in the same transaction."""
    held = svc.lock_acquire(access=setup["ada_access"], paths=["p.txt"], ttl_seconds=60)[0]
    Lock.objects.filter(pk=held.pk).update(expires_at=svc.db_now() - timedelta(milliseconds=5))
    taken = svc.lock_acquire(access=setup["bert_access"], paths=["p.txt"], ttl_seconds=60)[0]
    types = list(Event.objects.filter(workspace=setup["ws"], type__startswith="lock.").values_list("type", flat=True))
    assert types == ["lock.acquired", "lock.expired", "lock.acquired"]
    assert taken.token > held.token


@pytest.mark.django_db
def test_a_live_lock_is_not_ended_early(setup):
    """GIVEN a lock one second from its expiry WHEN the sweep runs and someone else asks THEN it
    still holds."""
    held = svc.lock_acquire(access=setup["ada_access"], paths=["q.txt"], ttl_seconds=60)[0]
    Lock.objects.filter(pk=held.pk).update(expires_at=svc.db_now() + timedelta(seconds=1))
    assert svc.lock_sweep() == 0
    with pytest.raises(Locked):
        svc.lock_acquire(access=setup["bert_access"], paths=["q.txt"], ttl_seconds=60)


@pytest.mark.django_db
def test_tokens_grow_per_workspace(setup, make_user):
    """GIVEN two workspaces WHEN locks are granted in both THEN each workspace's tokens grow on
    their own, and every grant in one is larger than the grants before it."""
    ada = setup["ada_access"]
    other_ws = workspace_create(user=setup["owner"].user, name="other", intelligence=False)
    owner_other = workspace_for(setup["owner"].user, other_ws.id)
    tokens = [svc.lock_acquire(access=ada, paths=[f"t{i}"], ttl_seconds=60)[0].token for i in range(3)]
    elsewhere = svc.lock_acquire(access=owner_other, paths=["t0"], ttl_seconds=60)[0].token
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert elsewhere == 1


@pytest.mark.django_db
def test_list_endpoint_query_count_does_not_grow_with_locks(setup, django_assert_max_num_queries):
    """GIVEN 3 and then 30 active locks WHEN the list is read THEN the number of queries is the
    same small number."""
    ada = setup["ada_access"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {setup['ada'].token}")
    url = f"/api/v1/workspaces/{setup['ws'].id}/locks"
    for i in range(3):
        svc.lock_acquire(access=ada, paths=[f"few/{i}"], ttl_seconds=60)
    with django_assert_max_num_queries(6):
        assert len(client.get(url).json()["results"]) == 3
    for i in range(27):
        svc.lock_acquire(access=ada, paths=[f"many/{i}"], ttl_seconds=60)
    with django_assert_max_num_queries(6):
        assert len(client.get(url).json()["results"]) == 30


def test_without_redis_a_waiter_polls_the_database_instead(settings):
    """GIVEN Redis unreachable WHEN a waiter sleeps until woken for up to 2 s THEN it returns after
    a short poll interval instead of failing or sleeping the whole time."""
    import time

    from workspace.services import lock_queue

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    started = time.monotonic()
    lock_queue.sleep_until_woken(123456789, 2.0)
    assert time.monotonic() - started < 1.0


@pytest.mark.django_db
def test_a_write_treats_a_due_lock_as_gone_and_records_its_expiry_first(setup):
    """GIVEN ada's lock past its expiry, not yet swept WHEN bert writes the path THEN the write is
    accepted without a token, and the log has ada's `lock.expired` before bert's `file.written`."""
    held = svc.lock_acquire(access=setup["ada_access"], paths=["w.txt"], ttl_seconds=60)[0]
    Lock.objects.filter(pk=held.pk).update(expires_at=svc.db_now() - timedelta(milliseconds=5))
    result = file_svc.file_write(access=setup["bert_access"], path="w.txt", content=b"bert")
    assert result.version.lock_token is None
    types = list(Event.objects.filter(workspace=setup["ws"]).exclude(type__in=["workspace.created", "member.set"])
                 .values_list("type", flat=True))
    assert types == ["lock.acquired", "lock.expired", "file.written"]


@pytest.mark.django_db(transaction=True)
def test_a_release_wakes_the_head_waiter_and_looks_no_further_when_nobody_waits(setup, monkeypatch):
    """The release statement itself says whether anyone waits in its workspace: with a waiter
    queued on the path, the release wakes exactly that waiter after commit; with nobody waiting
    there (a waiter in another workspace does not count), no other statement reads the queue and
    nobody is woken."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from workspace.services import lock_queue

    woken: list[list[int]] = []
    monkeypatch.setattr(lock_queue, "_wake", lambda tickets: woken.append(list(tickets)))
    ws = setup["ws"]
    elsewhere = workspace_create(user=setup["owner"].user, name="elsewhere", intelligence=False)
    lock_queue.waiter_enqueue(elsewhere.id, setup["owner"].user, ["notes/a.md"])  # another workspace's queue
    lock = svc.lock_acquire(access=setup["ada_access"], paths=["notes/a.md"])[0]
    with CaptureQueriesContext(connection) as queries:
        svc.lock_release(access=setup["ada_access"], lock_id=lock.id)
    assert woken == []
    reading_the_queue = [q["sql"] for q in queries if "lockwaiter" in q["sql"]]
    assert len(reading_the_queue) == 1 and reading_the_queue[0].startswith("UPDATE"), reading_the_queue

    lock = svc.lock_acquire(access=setup["ada_access"], paths=["notes/a.md"])[0]
    ticket = lock_queue.waiter_enqueue(ws.id, setup["bert"].user, ["notes/a.md"])
    other = lock_queue.waiter_enqueue(ws.id, setup["bert"].user, ["elsewhere.md"])
    svc.lock_release(access=setup["ada_access"], lock_id=lock.id)
    assert woken == [[ticket]], (ticket, other)


@pytest.mark.django_db
@pytest.mark.parametrize("receiver", [False, True], ids=["plain", "with a post_init receiver"])
def test_the_locks_a_grant_and_a_release_hand_back_are_what_the_orm_loads(setup, receiver):
    """GIVEN a grant and a release (with and without a post_init receiver for Lock) WHEN their locks
    come back THEN each equals the row as the ORM loads it, column for column, is a saved instance
    of that database, reads its holder without a query, saves like any other; and a receiver sees
    every lock built."""
    from django.db import connection
    from django.db.models.signals import post_init
    from django.test.utils import CaptureQueriesContext

    seen = []

    def listen(sender, instance, **kwargs):
        seen.append(instance)

    if receiver:
        post_init.connect(listen, sender=Lock)
    try:
        granted = svc.lock_acquire(access=setup["ada_access"], paths=["b.txt"], ttl_seconds=60, reason="r")[0]
        as_granted = Lock.objects.get(pk=granted.pk)
        released = svc.lock_release(access=setup["ada_access"], lock_id=granted.id)
        as_released = Lock.objects.get(pk=granted.pk)
    finally:
        post_init.disconnect(listen, sender=Lock)
    assert any(lock is granted for lock in seen) is receiver and any(lock is released for lock in seen) is receiver
    for built, orm, state in ((granted, as_granted, Lock.State.ACTIVE), (released, as_released, Lock.State.RELEASED)):
        assert built.state == state
        fields = [f.attname for f in Lock._meta.concrete_fields if f.attname not in ("acquired_at", "expires_at",
                                                                                     "ended_at")]
        assert [getattr(built, name) for name in fields] == [getattr(orm, name) for name in fields]
        for name in ("acquired_at", "expires_at", "ended_at"):  # the same instant, as the ORM reads it back
            assert getattr(built, name) == getattr(orm, name), name
        assert built._state.adding is False and built._state.db == orm._state.db
        with CaptureQueriesContext(connection) as queries:
            assert built.holder.username == "ada"
        assert not queries
    released.reason = "kept"
    released.save(update_fields=["reason"])
    assert Lock.objects.get(pk=released.pk).reason == "kept"


@pytest.mark.django_db
def test_a_refusal_reads_the_blocking_locks_with_their_users_in_one_statement(setup):
    """GIVEN ada's lock (ada is an agent acting for olivia) WHEN bert asks for the path THEN the 423
    names ada, her reason and expiry; inside the refusal's transaction the locks table is read
    three times (by the grant's counter update, which finds the way blocked and changes nothing,
    by the conflict scan, then for the blocking locks with their holder and on-behalf-of joined)
    and no user is read on its own; and those locks are what the ORM loads, users included."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    held = svc.lock_acquire(access=setup["ada_access"], paths=["p.txt"], ttl_seconds=60, reason="busy")[0]
    with CaptureQueriesContext(connection) as queries, pytest.raises(svc.LockHeld) as refused:
        svc.lock_acquire(access=setup["bert_access"], paths=["p.txt"], ttl_seconds=60)
    assert refused.value.details["holder"] == "ada" and refused.value.details["lock"] == held.id
    assert "(busy)" in refused.value.message and 55 < refused.value.retry_in <= 60
    statements = [q["sql"] for q in queries]
    reading_locks = [sql.split()[0] for sql in statements if "workspace_lock" in sql]
    assert reading_locks == ["UPDATE", "SELECT", "SELECT"], statements
    assert not [sql for sql in statements if "agents_user" in sql and "workspace_lock" not in sql], statements

    mine = svc.lock_acquire(access=setup["bert_access"], paths=["q.txt"], ttl_seconds=60)[0]
    Lock.objects.filter(pk=mine.pk).update(on_behalf_of=None)  # a human's own lock: nobody on whose behalf
    expected = {lock.id: lock for lock in Lock.objects.select_related("holder", "on_behalf_of")
                .filter(pk__in=[held.id, mine.id])}
    with CaptureQueriesContext(connection) as queries:
        loaded = svc._load_locks([mine.id, held.id])
        relations = [(lock.holder, lock.on_behalf_of) for lock in loaded]
    assert len(queries) == 1
    assert [lock.path for lock in loaded] == ["p.txt", "q.txt"]
    for lock, (holder, on_behalf_of) in zip(loaded, relations, strict=True):
        orm = expected[lock.id]
        assert [getattr(lock, f.attname) for f in Lock._meta.concrete_fields] == \
            [getattr(orm, f.attname) for f in Lock._meta.concrete_fields]
        assert holder == orm.holder and holder.username == orm.holder.username
        assert on_behalf_of == orm.on_behalf_of
    assert relations[0] == (setup["ada"].user, setup["owner"].user)
    assert relations[1] == (setup["bert"].user, None)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("enclosed", [False, True], ids=["own-transaction", "enclosing-transaction"])
def test_a_refused_waiter_joins_the_queue_with_its_refusal(setup, monkeypatch, enclosed):
    """GIVEN ada's lock WHEN bert waits 0.3 s for it THEN his first refusal takes his place in the
    queue in its own transaction: no separate join and no second try before he sleeps; the wait
    runs out as a 423 and his place is gone. In an enclosing transaction (an idempotent request's)
    the refusal cannot keep the place: he joins on his own and tries again at once, as before."""
    from django.db import transaction

    from workspace.models import LockWaiter

    steps: list[str] = []
    real_enqueue, real_sleep = svc.waiter_enqueue, svc.sleep_until_woken

    def enqueue(*args: object) -> int:
        steps.append("join")
        return real_enqueue(*args)

    def sleep(ticket: int, timeout: float) -> None:
        steps.append(f"sleep (queued: {LockWaiter.objects.filter(pk=ticket).count()})")
        real_sleep(ticket, timeout)

    monkeypatch.setattr(svc, "waiter_enqueue", enqueue)
    monkeypatch.setattr(svc, "sleep_until_woken", sleep)

    def attempt(*, ticket: int | None, join_queue: bool) -> list[Lock]:
        steps.append(f"try (ticket: {ticket is not None}, join: {join_queue})")
        with transaction.atomic() if enclosed else contextlib.nullcontext():
            return svc.lock_acquire(access=setup["bert_access"], paths=["p.txt"], ticket=ticket,
                                    join_queue=join_queue)

    svc.lock_acquire(access=setup["ada_access"], paths=["p.txt"], ttl_seconds=60)
    with pytest.raises(svc.LockHeld):
        svc.lock_acquire_waiting(access=setup["bert_access"], paths=["p.txt"], wait_seconds=0.3, attempt=attempt)
    if enclosed:
        assert steps == ["try (ticket: False, join: True)", "join", "try (ticket: True, join: False)",
                         "sleep (queued: 1)", "try (ticket: True, join: False)"]
    else:
        assert steps == ["try (ticket: False, join: True)", "sleep (queued: 1)", "try (ticket: True, join: False)"]
    assert LockWaiter.objects.count() == 0


@pytest.mark.django_db
def test_a_grant_with_nothing_in_the_way_checks_in_the_statement_that_takes_its_token(setup):
    """GIVEN a workspace with a history of ended locks on the path and nobody waiting WHEN ada asks
    for the path (and then for a subtree above it) THEN the lock table is read only by the update
    that takes the token and the event's sequence number, which finds no overlapping lock or
    waiter; that check reads indexes of the active locks only, never the history; and the grant
    is the next token with a gap-free event sequence."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ada = setup["ada_access"]
    for _ in range(5):
        svc.lock_release(access=ada, lock_id=svc.lock_acquire(access=ada, paths=["src/a.py"], ttl_seconds=60)[0].id)
    before = Event.objects.filter(workspace=setup["ws"]).count()
    checks = []
    for path in ("src/a.py", "src/"):
        with CaptureQueriesContext(connection) as queries:
            grant = svc.lock_acquire(access=ada, paths=[path], ttl_seconds=60)[0]
        on_locks = [q["sql"] for q in queries if "workspace_lock" in q["sql"]]
        assert [sql.split()[0] for sql in on_locks] == ["UPDATE", "INSERT"], on_locks
        assert "NOT EXISTS" in on_locks[0] and "RETURNING" in on_locks[0]
        checks.append(on_locks[0])
        svc.lock_release(access=ada, lock_id=grant.id)
    seqs = list(Event.objects.filter(workspace=setup["ws"]).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == before + 4
    assert list(Lock.objects.filter(workspace=setup["ws"]).order_by("token").values_list("token", flat=True)) == \
        list(range(1, 8))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is read whole by cost
        for sql in checks:
            cursor.execute(f"EXPLAIN {sql}" if connection.vendor == "postgresql" else f"EXPLAIN QUERY PLAN {sql}")
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "lock_active_path_unique" in plan, (sql, plan)
            assert "lock_token_idx" not in plan and "lock_path_token_idx" not in plan, (sql, plan)


@pytest.mark.django_db
def test_the_lock_list_is_one_statement_on_the_active_locks_in_path_order(setup):
    """GIVEN a history of ended locks, live locks of two holders and one past its expiry WHEN the
    list is read a page at a time, by prefix and by holder THEN it gives the live locks by path,
    each once, with their users loaded, never the one past its expiry; and each page is one
    statement on the lock table, on the index of active locks, without a sort."""
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ada, bert = setup["ada_access"], setup["bert_access"]
    for i in range(5):
        svc.lock_release(access=ada, lock_id=svc.lock_acquire(access=ada, paths=[f"dir/h{i}.txt"], ttl_seconds=60)[0].id)
    for path in ("dir/c.txt", "dir/a.txt", "top.txt"):
        svc.lock_acquire(access=ada, paths=[path], ttl_seconds=60)
    svc.lock_acquire(access=bert, paths=["dir/b.txt"], ttl_seconds=60)
    gone = svc.lock_acquire(access=bert, paths=["dir/z.txt"], ttl_seconds=60)[0]
    Lock.objects.filter(pk=gone.pk).update(expires_at=svc.db_now() - timedelta(seconds=1))
    ws_id = setup["ws"].id

    seen, after = [], None
    with CaptureQueriesContext(connection) as queries:
        while True:
            page = svc.lock_list(workspace_id=ws_id, after=after, limit=2)
            seen += page
            if len(page) < 2:
                break
            after = page[-1].path
    assert [lock.path for lock in seen] == ["dir/a.txt", "dir/b.txt", "dir/c.txt", "top.txt"]
    assert [lock.holder.username for lock in seen] == [setup["ada"].username, setup["bert"].username,
                                                       setup["ada"].username, setup["ada"].username]
    # The agents act for the person who made them.
    assert all(lock.on_behalf_of.username == setup["owner"].username and lock.state == Lock.State.ACTIVE
               for lock in seen)
    statements = [q["sql"] for q in queries if "workspace_lock" in q["sql"]]
    assert len(statements) == 3, [q["sql"] for q in queries]  # (PostgreSQL also reads its clock)
    assert [lock.path for lock in svc.lock_list(workspace_id=ws_id, prefix="dir/", limit=10)] == \
        ["dir/a.txt", "dir/b.txt", "dir/c.txt"]
    assert svc.lock_list(workspace_id=ws_id, prefix="DIR/", limit=10) == []
    assert [lock.path for lock in svc.lock_list(workspace_id=ws_id, holder=setup["bert"].username, limit=10)] == \
        ["dir/b.txt"]

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is read whole by cost
        cursor.execute(f"EXPLAIN {statements[-1]}" if connection.vendor == "postgresql"
                       else f"EXPLAIN QUERY PLAN {statements[-1]}")
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "lock_active_path_unique" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
