"""Fixtures for the intelligence tests (imported by the tests/test_search_*.py modules).

Service-level tests run the real RQ job path in-process: the listener enqueues on a queue moved to
its own Redis database (so the live server's workers, which share the session's Redis, never take
these jobs from a test transaction they cannot see), and a `SimpleWorker` drains it in burst mode.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.helpers import redis_url_with_db


@pytest.fixture
def index_queue(settings: Any, redis_server: str) -> Iterator[Any]:
    import django_rq

    shared = django_rq.get_queue("index").connection.connection_pool.connection_kwargs.get("db", 0)
    url = redis_url_with_db(settings.RQ_QUEUES["index"]["URL"], 15 if shared != 15 else 14)
    settings.RQ_QUEUES = {**settings.RQ_QUEUES, "index": {**settings.RQ_QUEUES["index"], "URL": url}}
    # The test transaction never commits; enqueue as production does outside a transaction.
    settings.RQ = {**settings.RQ, "COMMIT_MODE": "auto"}
    queue = django_rq.get_queue("index")
    queue.empty()
    yield queue
    queue.empty()


@pytest.fixture
def run_jobs(index_queue: Any) -> Callable[[], int]:
    """Run every job on the isolated "index" queue in this process; return how many ran."""
    from rq.worker import SimpleWorker

    class CountingWorker(SimpleWorker):
        executed = 0

        def execute_job(self, job: Any, queue: Any) -> Any:
            self.executed += 1
            return super().execute_job(job, queue)

    def run() -> int:
        worker = CountingWorker([index_queue], connection=index_queue.connection)
        worker.work(burst=True, logging_level="WARNING")
        return worker.executed

    return run


@dataclass
class Person:
    user: Any
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"HTTP_AUTHORIZATION": f"Bearer {self.token}"}


@pytest.fixture
def person(db: Any) -> Callable[[], Person]:
    """An account with a token, without a password (hashing one costs a second on a busy machine)."""
    import itertools

    from agents.models import User
    from agents.services import token_issue

    counter = itertools.count()

    def make() -> Person:
        user = User.objects.create(username=f"searcher{next(counter)}")
        return Person(user=user, token=token_issue(user=user).secret)

    return make


@dataclass
class Space:
    """A workspace with intelligence on, its owner, and helpers that go through the services."""

    workspace: Any
    owner: Any
    token: str
    capture: Callable[..., Any]

    @property
    def id(self) -> str:
        return str(self.workspace.id)

    @property
    def headers(self) -> dict[str, str]:
        """The owner's credentials, for the API test client."""
        return {"HTTP_AUTHORIZATION": f"Bearer {self.token}"}

    def access(self, user: Any = None) -> Any:
        from workspace.access import workspace_for

        return workspace_for(user or self.owner, self.id)

    def write(self, path: str, content: str | bytes, *, user: Any = None, task_id: str = "") -> Any:
        """Write through the service; the commit hooks (the search listener) run as on commit."""
        from workspace.services.files import file_write

        data = content.encode() if isinstance(content, str) else content
        with self.capture(execute=True):
            return file_write(access=self.access(user), path=path, content=data, task_id=task_id).version

    def delete(self, path: str) -> Any:
        from workspace.services.files import file_delete

        with self.capture(execute=True):
            return file_delete(access=self.access(), path=path)

    def move(self, src: str, dst: str) -> Any:
        from workspace.services.files import file_move

        with self.capture(execute=True):
            return file_move(access=self.access(), src=src, dst=dst)

    def add_member(self, user: Any, role: str = "viewer") -> None:
        from workspace.models import Membership

        Membership.objects.create(workspace=self.workspace, user=user, role=role)

    def state(self, path: str) -> Any:
        from search.models import IndexState

        return IndexState.objects.get(workspace_id=self.id, path=path)

    def events(self, kind: str) -> list[dict[str, Any]]:
        from workspace.models import Event

        return list(Event.objects.filter(workspace_id=self.id, type=kind).order_by("seq")
                    .values_list("data", flat=True))


@pytest.fixture
def make_space(person: Callable[[], Person], chroma: str, index_queue: Any,
               django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[..., Space]:
    from workspace.services.workspaces import workspace_create

    def make(*, intelligence: bool = True, owner: Person | None = None) -> Space:
        account = owner or person()
        workspace = workspace_create(user=account.user, name="intel", intelligence=intelligence)
        return Space(workspace=workspace, owner=account.user, token=account.token,
                     capture=django_capture_on_commit_callbacks)

    return make


def search(space: Space, query: str, **kwargs: Any) -> list[dict[str, Any]]:
    from search.selectors import search as run

    return [hit.as_dict() for hit in run(workspace_ids=[space.id], query=query, **kwargs).hits]


LONG_GUIDE = "\n\n".join(
    f"## Part {i}\n\n" + " ".join(f"Step {i}.{j} of the harbour procedure moves the crane to berth {j}."
                                  for j in range(14))
    for i in range(4)
)
