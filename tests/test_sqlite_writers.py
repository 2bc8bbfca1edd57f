"""The embedded default's queue of SQLite writers (switchyard/db/sqlite3/base.py): queued writers go
in arrival order and one that has waited long is never overtaken, writers of different processes
exclude each other, and a wait past the database's timeout is the API's `503 database_busy` with
nothing changed."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.test import Client

from switchyard.db.sqlite3.base import WriterQueue, _FairLock

HOLDER = """
import sqlite3, sys
from switchyard.db.sqlite3.base import writer_queue
queue = writer_queue(sys.argv[1])
queue.acquire(10)
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
queue.release()
print("released", flush=True)
"""


class Holder:
    """Another process in the middle of a write transaction on `database`, until `release()`."""

    def __init__(self, database: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, database], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "released"
        assert self.proc.wait(10) == 0


@pytest.fixture
def holder_of(tmp_path: Path) -> Iterator[list[Holder]]:
    holders: list[Holder] = []
    yield holders
    for holder in holders:
        if holder.proc.poll() is None:
            holder.proc.kill()
            holder.proc.wait()


def test_waiters_in_one_process_get_the_lock_in_arrival_order():
    """GIVEN a held lock and 6 threads that queue for it one after another WHEN it is released each
    time THEN they get it in exactly the order they arrived."""
    lock = _FairLock()
    assert lock.acquire(1)
    order: list[int] = []
    threads = []

    def waiter(i: int) -> None:
        assert lock.acquire(10)
        order.append(i)
        lock.release()

    for i in range(6):
        thread = threading.Thread(target=waiter, args=(i,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 5
        while len(lock._waiters) < i + 1:  # this one is in the queue before the next arrives
            assert time.monotonic() < deadline
            time.sleep(0.001)
    lock.release()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4, 5]


def test_a_waiter_that_times_out_leaves_the_queue_and_the_lock_is_still_handed_on():
    """GIVEN a held lock WHEN one waiter gives up after its timeout THEN it is not in the queue, and
    after the release the lock is free for the next caller at once."""
    lock = _FairLock()
    assert lock.acquire(1)
    assert lock.acquire(0.05) is False
    assert not lock._waiters
    lock.release()
    assert lock.acquire(0)
    lock.release()


def test_a_waiter_that_waited_past_the_starvation_bound_is_not_overtaken_by_a_newcomer():
    """GIVEN a held lock and a thread that has queued for longer than the starvation bound WHEN the
    holder releases and at once asks again (a newcomer barging in) THEN the newcomer is refused and
    the waiting thread has the lock."""
    lock = _FairLock(starving=0.05)
    assert lock.acquire(1)
    got = threading.Event()
    done = threading.Event()

    def waiter() -> None:
        assert lock.acquire(10)
        got.set()
        done.wait(10)
        lock.release()

    thread = threading.Thread(target=waiter)
    thread.start()
    deadline = time.monotonic() + 5
    while not lock._waiters:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    time.sleep(0.1)
    lock.release()
    assert lock.acquire(0) is False
    assert got.wait(5)
    done.set()
    thread.join(10)
    assert lock.acquire(0)
    lock.release()


def test_another_process_in_a_write_transaction_holds_back_writers_here_until_it_ends(tmp_path, holder_of):
    """GIVEN another process inside a write transaction on a database file WHEN this process asks
    for its turn with a short timeout THEN it is refused with "database is locked"; once the other
    process ends its transaction, the turn is granted (the timed-out wait did not keep the lock)."""
    database = str(tmp_path / "db.sqlite3")
    holder = Holder(database)
    holder_of.append(holder)
    queue = WriterQueue(f"{database}.writers")
    with pytest.raises(OperationalError, match="database is locked"):
        queue.acquire(0.2)
    holder.release()
    queue.acquire(5)  # the cancelled wait gave the flock back as soon as it got it
    queue.release()
    queue.acquire(5)
    queue.release()


GIVE_UP = """
import sys
from django.db import OperationalError
from switchyard.db.sqlite3.base import writer_queue
try:
    writer_queue(sys.argv[1]).acquire(0.2)
except OperationalError:
    print("refused", flush=True)
"""


def test_a_process_whose_wait_timed_out_can_exit_while_the_other_still_holds(tmp_path, holder_of):
    """GIVEN another process inside a write transaction WHEN a third process's wait times out and it
    exits THEN it exits at once (its abandoned flock call does not keep it alive), and the holder
    is unaffected."""
    database = str(tmp_path / "db.sqlite3")
    holder = Holder(database)
    holder_of.append(holder)
    quitter = subprocess.run([sys.executable, "-c", GIVE_UP, database], capture_output=True, text=True,
                             timeout=20, cwd=Path(__file__).resolve().parent.parent)
    assert quitter.returncode == 0 and quitter.stdout.strip() == "refused", quitter.stderr
    holder.release()


@pytest.mark.django_db(transaction=True)
def test_a_write_that_waits_past_the_timeout_is_503_database_busy_and_changes_nothing(make_user, holder_of):
    """GIVEN a workspace and another process holding the database's write transaction WHEN a file is
    written with the database timeout at 0.3 s THEN 503 database_busy with Retry-After and the error
    body, and after the other process finishes the file does not exist; a retry then succeeds."""
    if connection.vendor != "sqlite":
        pytest.skip("the writer queue belongs to the embedded default (SQLite)")
    owner = make_user("queue-owner")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {owner.token}")
    created = client.post("/api/v1/workspaces", data=json.dumps({"name": "queue"}), content_type="application/json")
    assert created.status_code == 201, created.content
    ws = created.json()["id"]
    options = connection.settings_dict.setdefault("OPTIONS", {})
    previous = options.get("timeout")
    holder = Holder(connection.settings_dict["NAME"])
    holder_of.append(holder)
    try:
        options["timeout"] = 0.3
        response = client.put(f"/api/v1/workspaces/{ws}/files/a.txt", data=b"hello",
                              content_type="application/octet-stream")
    finally:
        options["timeout"] = previous
        holder.release()
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "database_busy"
    assert client.get(f"/api/v1/workspaces/{ws}/files/a.txt").status_code == 404
    retried = client.put(f"/api/v1/workspaces/{ws}/files/a.txt", data=b"hello",
                         content_type="application/octet-stream")
    assert retried.status_code == 201, retried.content
