"""No lost update under concurrency, against a live multi-process server (DESIGN "Correctness rules")."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import create_workspace, put_file

CLIENTS = 16
INCREMENTS = 50


@pytest.mark.timeout(900)  # 16-way contention on one row: ~45 s on this machine, minutes when it is loaded
def test_sixteen_clients_increment_a_counter_without_losing_an_update(live, make_user):
    """GIVEN a counter file at 0 WHEN 16 clients each do 50 read-modify-write increments with If-Match,
    retrying on 412 from the `current` the 412 carries THEN the value is exactly 800 and the history has
    exactly 801 versions."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "counter")
        assert put_file(api, ws, "counter.txt", "0").status_code == 201
    url = f"/api/v1/workspaces/{ws}/files/counter.txt"
    conflicts = []
    lock = threading.Lock()

    def worker() -> None:
        with live.client(owner.token) as client:
            response = client.get(url)
            value, version = int(response.content), int(response.headers["X-Version"])
            done = 0
            while done < INCREMENTS:
                put = client.put(url, content=str(value + 1).encode(), headers={"If-Match": f'"{version}"'})
                if put.status_code in (200, 201):
                    done += 1
                    value, version = value + 1, put.json()["version"]
                    continue
                assert put.status_code == 412, put.text
                current = put.json()["error"]["current"]
                value, version = int(current["content"]), current["version"]
                with lock:
                    conflicts.append(1)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for future in [pool.submit(worker) for _ in range(CLIENTS)]:
            future.result()

    with live.client(owner.token) as api:
        final = api.get(url)
        assert int(final.content) == CLIENTS * INCREMENTS
        assert final.headers["X-Version"] == str(CLIENTS * INCREMENTS + 1)
        versions = []
        cursor = None
        while True:
            page = api.get(f"/api/v1/workspaces/{ws}/history/counter.txt",
                           params={"limit": 500, **({"cursor": cursor} if cursor else {})}).json()
            versions += [v["version"] for v in page["results"]]
            cursor = page["next"]
            if not cursor:
                break
    assert sorted(versions) == list(range(1, CLIENTS * INCREMENTS + 2))
    assert conflicts, "16 clients on one file must have collided at least once"


def test_racing_creates_with_if_none_match_exactly_one_wins(live, make_user):
    """GIVEN 16 clients WHEN all create one path with If-None-Match: * at once THEN exactly one 201,
    the rest 412 already_exists, and the file holds the winner's bytes."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "race")
    barrier = threading.Barrier(CLIENTS)

    def create(i: int) -> tuple[int, int]:
        with live.client(owner.token) as client:
            barrier.wait()
            response = put_file(client, ws, "claim.txt", f"writer-{i}", **{"If-None-Match": "*"})
            if response.status_code == 412:
                assert response.json()["error"]["code"] == "already_exists"
            return i, response.status_code

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(create, range(CLIENTS)))
    winners = [i for i, status in results if status == 201]
    assert len(winners) == 1
    assert sorted(status for _, status in results) == [201] + [412] * (CLIENTS - 1)
    with live.client(owner.token) as api:
        assert api.get(f"/api/v1/workspaces/{ws}/files/claim.txt").content == f"writer-{winners[0]}".encode()
        assert len(api.get(f"/api/v1/workspaces/{ws}/history/claim.txt").json()["results"]) == 1


def test_racing_moves_of_one_inbox_file_exactly_one_wins(live, make_user):
    """GIVEN inbox/job.md WHEN 8 agents race to move it into their own directory THEN exactly one move
    succeeds and the file exists in exactly one place."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "claims")
        put_file(api, ws, "inbox/job.md", "do it")
    barrier = threading.Barrier(8)

    def move(i: int) -> int:
        with live.client(owner.token) as client:
            barrier.wait()
            return client.post(f"/api/v1/workspaces/{ws}/moves",
                               json={"from": "inbox/job.md", "to": f"agent-{i}/job.md"}).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(move, range(8)))
    assert statuses.count(201) == 1
    assert all(s in (404, 412) for s in statuses if s != 201)
    with live.client(owner.token) as api:
        paths = [f["path"] for f in api.get(f"/api/v1/workspaces/{ws}/tree").json()["results"]]
    assert len(paths) == 1 and paths[0].endswith("/job.md") and paths[0].startswith("agent-")


def test_event_sequence_is_gap_free_under_concurrent_writers(live, make_user):
    """GIVEN 8 concurrent writers WHEN they write 20 files each THEN the event seqs are exactly 1..N."""
    owner = make_user()
    with live.client(owner.token) as api:
        ws = create_workspace(api, "seq")

    def write(i: int) -> None:
        with live.client(owner.token) as client:
            for j in range(20):
                assert put_file(client, ws, f"w{i}/f{j}.txt", "x").status_code == 201

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    with live.client(owner.token) as api:
        seqs = []
        cursor = None
        while True:
            page = api.get(f"/api/v1/workspaces/{ws}/events",
                           params={"limit": 100, **({"cursor": cursor} if cursor else {})}).json()
            seqs += [e["seq"] for e in page["results"]]
            cursor = page["next"]
            if not cursor:
                break
        after = api.get(f"/api/v1/workspaces/{ws}/events", params={"after": 150}).json()["results"]
    assert seqs == list(range(1, 1 + 1 + 160))
    assert [e["seq"] for e in after] == list(range(151, 162))
