"""End to end on the live server: write over HTTP -> a real RQ worker indexes -> search and ask."""
from __future__ import annotations

import time

from tests import test_search_support as support

person = support.person

DOC = ("# Pilotage\n\nEvery vessel longer than eighty metres must take a pilot aboard at the fairway buoy.\n\n"
       "Pilots are booked through the harbour office at least two hours before arrival.\n")


def test_a_file_written_over_http_becomes_searchable_and_stays_private(live, chroma, person):
    """GIVEN a live server with its RQ workers WHEN a member writes a file over HTTP THEN a worker
    indexes it (state `indexed`, a `file.indexed` event) and the member finds it and gets an answer
    citing it, while a non-member finds nothing of it through /search and cannot ask or search there."""
    alice, carol = person(), person()
    with live.client(alice.token, timeout=180) as api:
        ws = api.post("/api/v1/workspaces", json={"name": "harbour", "intelligence": True}).json()["id"]
        written = api.put(f"/api/v1/workspaces/{ws}/files/rules/pilotage.md", content=DOC.encode())
        assert written.status_code == 201
        deadline = time.monotonic() + 150
        while True:
            rows = api.get(f"/api/v1/workspaces/{ws}/index").json()["results"]
            if rows and rows[0]["status"] != "pending":
                break
            assert time.monotonic() < deadline, f"not indexed in time: {rows}"
            time.sleep(0.3)
        assert (rows[0]["path"], rows[0]["status"], rows[0]["indexed_version"]) == ("rules/pilotage.md", "indexed", 1)
        events = api.get(f"/api/v1/workspaces/{ws}/events", params={"type": "file.indexed"}).json()["results"]
        assert events[0]["data"]["path"] == "rules/pilotage.md" and events[0]["data"]["chunks"] == 1

        found = api.post(f"/api/v1/workspaces/{ws}/search", json={"query": "when must a ship take a pilot?"})
        assert found.status_code == 200, found.text
        assert found.json()["results"][0]["path"] == "rules/pilotage.md"
        everywhere = api.post("/api/v1/search", json={"query": "pilot fairway buoy", "mode": "keyword"}).json()
        assert [hit["workspace"] for hit in everywhere["results"]] == [ws]
        answer = api.post(f"/api/v1/workspaces/{ws}/ask", json={"question": "How are pilots booked?"}).json()
        assert "[1]" in answer["answer"] and answer["citations"][0]["path"] == "rules/pilotage.md"

    with live.client(carol.token, timeout=180) as api:
        for mode in ("hybrid", "semantic", "keyword"):
            body = api.post("/api/v1/search", json={"query": "pilot fairway buoy harbour office", "mode": mode}).json()
            assert body == {"results": [], "pending": 0}, mode
        assert api.post(f"/api/v1/workspaces/{ws}/search", json={"query": "pilot"}).status_code == 404
        assert api.post(f"/api/v1/workspaces/{ws}/ask", json={"question": "How are pilots booked?"}).status_code == 404
