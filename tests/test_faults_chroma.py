"""Chroma restart (issue 9): indexing resumes, and nothing stays `pending` (or `error`) for good.

The slow test runs a launcher on a Redis and a Chroma server of its own (so no other server's
workers index its files into another Chroma), SIGKILLs that Chroma for longer than RQ's retries of
an indexing job last, writes meanwhile, and restarts it on the same port and data directory.
"""
from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from search import services, vectors
from search.models import IndexState
from tests import test_search_support as support
from tests.conftest import _wait, start_launcher, stop_launcher
from tests.helpers import create_workspace
from tests.test_faults_workers import _start_redis

index_queue = support.index_queue
make_space = support.make_space
person = support.person
run_jobs = support.run_jobs

Status = IndexState.Status

TOPICS = [
    "Pilots board inbound tankers at the fairway buoy two hours before high water.",
    "The bakery proofs its sourdough overnight in a cold room at four degrees.",
    "Glaciers in the northern valley retreated forty metres during the last decade.",
    "The chess club meets on Thursdays and plays the Sicilian defence far too often.",
    "Our greenhouse tomatoes need potassium feed once the first truss has set.",
    "The orchestra tunes to an oboe playing concert A before every rehearsal.",
    "Volcanic ash grounded every flight at the island airport for three days.",
    "A honeybee colony swarms in spring when the old queen leaves with half the workers.",
    "The marathon route climbs the cathedral hill twice before the riverside finish.",
    "Sailmakers stitch the luff tape with waxed polyester thread by hand.",
    "The observatory measured the comet's tail at two million kilometres.",
    "Cheese caves keep the wheels at ninety-five percent humidity while they ripen.",
]


def _start_chroma(path: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    chroma_bin = Path(sys.executable).parent / "chroma"
    with open(log, "ab") as out:
        return subprocess.Popen([str(chroma_bin), "run", "--path", str(path), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)


def _chroma_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _index(api: httpx.Client, ws: str) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Every file's index state by path, and the counts per status."""
    rows: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        page = api.get(f"/api/v1/workspaces/{ws}/index", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        rows.update({row["path"]: row for row in body["results"]})
        cursor = body["next"]
        if not cursor:
            return rows, body["counts"]


def _all_indexed(api: httpx.Client, ws: str, heads: dict[str, int]) -> bool:
    rows, counts = _index(api, ws)
    return counts.get("pending", 0) == 0 and counts.get("error", 0) == 0 and all(
        path in rows and rows[path]["status"] == "indexed" and rows[path]["indexed_version"] == version
        for path, version in heads.items())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_indexing_resumes_after_a_chroma_restart_and_nothing_stays_pending(
        database_to_itself, transactional_db, make_user, tmp_path):
    """GIVEN a live server with intelligence on and 6 files indexed WHEN its Chroma server is SIGKILLed,
    6 new files and 2 new versions are written while it is down (every write 2xx, never a 500; the
    files wait as pending or failed-with-retry) and it stays down past RQ's last retry, then restarts
    on the same port and data directory THEN within 90 s every file's latest version is indexed, the
    index state shows zero pending and zero errors, keyword and semantic search find every file at its
    latest version, and Chroma holds exactly the vectors of the chunk rows."""
    from search.models import Chunk
    from switchyard.launcher import free_port

    owner = make_user("chroma-fault")
    redis_proc, sock = _start_redis(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data, log = tmp_path / "chroma", tmp_path / "chroma.log"
    chroma = _start_chroma(data, port, log)
    _wait(lambda: _chroma_up(url), "chroma", 60)
    server = start_launcher(workers=2, web_workers=1, extra_env={"REDIS_URL": f"unix://{sock}", "CHROMA_URL": url})
    heads: dict[str, int] = {}
    try:
        with server.client(owner.token, timeout=60) as api:
            ws = create_workspace(api, "chroma-fault", intelligence=True)
            files = f"/api/v1/workspaces/{ws}/files"
            for i, text in enumerate(TOPICS[:6]):
                written = api.put(f"{files}/before/{i}.md", content=text.encode())
                assert written.status_code == 201, written.text
                heads[f"before/{i}.md"] = 1
            # The first job loads the embedding model.
            _wait(lambda: _all_indexed(api, ws, heads), "the first files' indexing", 240)

            chroma.send_signal(signal.SIGKILL)
            chroma.wait(timeout=10)
            down_at = time.monotonic()
            for i, text in enumerate(TOPICS[6:]):
                written = api.put(f"{files}/during/{i}.md", content=text.encode())
                assert written.status_code == 201, written.text
                heads[f"during/{i}.md"] = 1
            for i in (0, 1):
                written = api.put(f"{files}/before/{i}.md", content=f"{TOPICS[i]} Revised after the audit.".encode())
                assert written.status_code == 200, written.text
                heads[f"before/{i}.md"] = 2
            # Search degrades (keyword needs no Chroma; hybrid falls back to it) or answers 503, never 500.
            for mode, expected in (("keyword", 200), ("semantic", 503), ("hybrid", 200)):
                found = api.post(f"/api/v1/workspaces/{ws}/search", json={"query": "sourdough", "mode": mode})
                assert found.status_code == expected, (mode, found.status_code, found.text)
            # Down past RQ's retries (2 + 10 + 30 s): the new versions wait, retried or failed-with-retry.
            waiting = {p for p, v in heads.items() if v > 1 or p.startswith("during/")}
            retries_over = sum(services.RETRY_INTERVALS) + 8
            while time.monotonic() - down_at < retries_over:
                rows, _ = _index(api, ws)
                assert all(rows[p]["status"] in ("pending", "error") and rows[p]["indexed_version"] != heads[p]
                           for p in waiting if p in rows), {p: rows.get(p) for p in waiting}
                time.sleep(2)

            rows, _ = _index(api, ws)
            gave_up = sorted(p for p in waiting if rows[p]["status"] == "error")
            chroma = _start_chroma(data, port, log)
            _wait(lambda: _chroma_up(url), "chroma restart", 60)
            back_at = time.monotonic()
            _wait(lambda: _all_indexed(api, ws, heads), "indexing after the restart", 90)
            recovered_in = time.monotonic() - back_at

            for i, text in enumerate(TOPICS):
                path = f"before/{i}.md" if i < 6 else f"during/{i - 6}.md"
                for mode in ("keyword", "semantic"):
                    found = api.post(f"/api/v1/workspaces/{ws}/search", json={"query": text, "mode": mode, "k": 3})
                    assert found.status_code == 200, found.text
                    hits = found.json()["results"]
                    assert hits and (hits[0]["path"], hits[0]["version"]) == (path, heads[path]), (mode, path, hits)
            rows, counts = _index(api, ws)
            assert counts.get("pending", 0) == 0 and counts.get("error", 0) == 0, counts
        chunk_ids = set(Chunk.objects.filter(workspace_id=ws).values_list("vector_id", flat=True))
        assert set(_vector_ids(port, ws)) == chunk_ids
        print(f"\n{len(gave_up)} of {len(waiting)} files were in error (RQ's retries over) when Chroma came back; "
              f"indexing recovered {recovered_in:.1f}s after")
    finally:
        stop_launcher(server)
        chroma.terminate()
        chroma.wait(timeout=15)
        redis_proc.terminate()
        redis_proc.wait(timeout=10)


def _vector_ids(port: int, workspace_id: str) -> list[str]:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.HttpClient(host="127.0.0.1", port=port, settings=Settings(anonymized_telemetry=False))
    return list(client.get_collection(vectors.collection_name(workspace_id)).get(include=[])["ids"])


def test_files_that_failed_while_chroma_was_down_are_indexed_once_it_answers(make_space, run_jobs, settings,
                                                                              monkeypatch):
    """GIVEN a file whose indexing gave up (`error`) because Chroma was unreachable WHEN the sweep runs
    while Chroma is still down THEN it stays in `error`; WHEN it runs once Chroma answers THEN the file
    is pending again with a new job, and indexed; a file that keeps failing so gets MAX_REQUEUES rounds."""
    space = make_space()
    chroma_url = settings.CHROMA_URL
    monkeypatch.setattr(services, "RETRY_INTERVALS", [0, 0])  # retry at once: no scheduler in a burst
    settings.CHROMA_URL = "http://127.0.0.1:9"
    monkeypatch.setattr(vectors, "_client", None)
    monkeypatch.setattr(vectors, "_collections", {})
    space.write("a.md", "Pilot boats wait at the outer anchorage.")
    assert run_jobs() == 3
    assert space.state("a.md").status == Status.ERROR
    assert space.state("a.md").reason.startswith(services.UNAVAILABLE_REASON)
    assert services.index_retry_unavailable() == 0
    assert space.state("a.md").status == Status.ERROR

    settings.CHROMA_URL = chroma_url
    monkeypatch.setattr(vectors, "_client", None)
    assert services.index_retry_unavailable() == 1
    state = space.state("a.md")
    assert (state.status, state.attempts, state.requeues) == (Status.PENDING, 0, 1)
    assert run_jobs() == 1
    state = space.state("a.md")
    assert (state.status, state.indexed_version, state.requeues) == (Status.INDEXED, 1, 0)

    # Not forever: after MAX_REQUEUES rounds the error stands (until `manage.py reindex`).
    IndexState.objects.filter(pk=state.pk).update(status=Status.ERROR, reason=f"{services.UNAVAILABLE_REASON}x",
                                                  requeues=services.MAX_REQUEUES)
    assert services.index_retry_unavailable() == 0
    # Other errors are not retried by this sweep.
    IndexState.objects.filter(pk=state.pk).update(requeues=0, reason="BlobCorrupt: bad sha256",
                                                  updated_at=state.updated_at - dt.timedelta(minutes=5))
    assert services.index_retry_unavailable() == 0
