"""The intelligence API: search, ask, index state; validation, isolation and the LLM provider."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rest_framework.test import APIClient

from search import vectors
from tests import test_search_support as support

# The shared fixtures of the intelligence tests.
index_queue = support.index_queue
make_space = support.make_space
person = support.person
run_jobs = support.run_jobs

CRANE = ("# Cranes\n\nThe big gantry crane stands at berth four. It lifts forty containers an hour.\n\n"
         "Maintenance of the crane happens every Sunday night.\n")


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def post(api: APIClient, url: str, body: Any, who: Any) -> Any:
    return api.post(url, data=json.dumps(body), content_type="application/json", **who.headers)


@pytest.mark.parametrize("body, code", [
    ({}, "invalid"),
    ({"query": ""}, "invalid"),
    ({"query": " \n "}, "invalid"),
    ({"query": "crane", "k": 0}, "invalid"),
    ({"query": "crane", "k": 101}, "invalid"),
    ({"query": "crane", "k": "ten"}, "invalid"),
    ({"query": "crane", "mode": "fuzzy"}, "invalid"),
    ({"query": "crane", "prefix": "../etc/"}, "invalid_path"),
    ({"query": "crane", "prefix": "/abs/"}, "invalid_path"),
    ({"query": "crane", "since": "2030-01-01T00:00:00Z", "until": "2020-01-01T00:00:00Z"}, "invalid_time_range"),
    (["crane"], "invalid_body"),
])
def test_bad_search_input_is_a_400_with_the_error_body(make_space, api, body, code):
    """GIVEN a member WHEN a search has a bad body THEN both search endpoints answer 400 with the
    API's error body naming what is wrong."""
    space = make_space()
    for url in (f"/api/v1/workspaces/{space.id}/search", "/api/v1/search"):
        response = post(api, url, body, space)
        assert response.status_code == 400, (url, response.content)
        error = response.json()["error"]
        assert error["code"] == code and error["message"]


def test_search_needs_credentials_and_membership(make_space, person, api, run_jobs):
    """GIVEN a workspace WHEN someone without credentials, or a non-member, calls its search, ask
    or index THEN 401, or 404 exactly as for a workspace that does not exist."""
    space = make_space()
    assert api.post("/api/v1/search", {"query": "x"}, format="json").status_code == 401
    stranger = person()
    for url, body in ((f"/api/v1/workspaces/{space.id}/search", {"query": "crane"}),
                      (f"/api/v1/workspaces/{space.id}/ask", {"question": "Where is the crane?"}),
                      ("/api/v1/workspaces/ws_doesnotexist/search", {"query": "crane"})):
        response = post(api, url, body, stranger)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert api.get(f"/api/v1/workspaces/{space.id}/index", **stranger.headers).status_code == 404


def test_search_returns_hits_with_the_contract_fields(make_space, person, api, run_jobs):
    """GIVEN an indexed file WHEN a viewer searches THEN each result has workspace, path, version,
    score, snippet, start, end and stale, and the response counts pending files."""
    space = make_space()
    viewer = person()
    space.add_member(viewer.user, "viewer")
    space.write("cranes.md", CRANE)
    run_jobs()
    space.write("later.md", "Not indexed yet.")
    response = post(api, f"/api/v1/workspaces/{space.id}/search", {"query": "gantry crane berth", "k": 5}, viewer)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["pending"] == 1
    hit = body["results"][0]
    assert set(hit) == {"workspace", "path", "version", "score", "snippet", "start", "end", "stale"}
    assert (hit["workspace"], hit["path"], hit["version"], hit["stale"]) == (space.id, "cranes.md", 1, False)
    assert CRANE[hit["start"]:hit["end"]].startswith("# Cranes") and "gantry crane" in hit["snippet"]


def test_no_one_sees_a_chunk_of_a_workspace_they_cannot_read(make_space, person, api, run_jobs):
    """GIVEN two workspaces holding the same distinctive text WHEN members and a stranger search
    everything (/search, every mode) or ask THEN each sees only their own workspaces' passages, the
    stranger nothing; after being added to the other workspace a member sees both."""
    alice, bob, carol = person(), person(), person()
    a, b = make_space(owner=alice), make_space(owner=bob)
    a.write("a/cranes.md", CRANE)
    b.write("b/cranes.md", CRANE + "\nThe secret password of the crane cabin is tangerine.\n")
    run_jobs()
    for who, expected in ((alice, {a.id}), (bob, {b.id}), (carol, set())):
        for mode in ("hybrid", "semantic", "keyword"):
            response = post(api, "/api/v1/search", {"query": "crane cabin password", "mode": mode}, who)
            assert response.status_code == 200
            assert {hit["workspace"] for hit in response.json()["results"]} == expected, (mode, who.user)
    asked = post(api, f"/api/v1/workspaces/{a.id}/ask", {"question": "What is the crane cabin password?"}, alice)
    assert asked.status_code == 200
    assert "tangerine" not in json.dumps(asked.json())
    assert {c["path"] for c in asked.json()["citations"]} <= {"a/cranes.md"}
    assert post(api, f"/api/v1/workspaces/{b.id}/ask", {"question": "password?"}, carol).status_code == 404

    b.add_member(alice.user, "viewer")
    response = post(api, "/api/v1/search", {"query": "crane cabin password"}, alice)
    assert {hit["workspace"] for hit in response.json()["results"]} == {a.id, b.id}


def test_a_workspace_without_intelligence_refuses_search_and_ask(make_space, api):
    """GIVEN a workspace with intelligence off WHEN its search or ask is called THEN 409
    intelligence_off; /search across workspaces simply leaves it out."""
    space = make_space(intelligence=False)
    for url, body in ((f"/api/v1/workspaces/{space.id}/search", {"query": "crane"}),
                      (f"/api/v1/workspaces/{space.id}/ask", {"question": "crane?"})):
        response = post(api, url, body, space)
        assert response.status_code == 409 and response.json()["error"]["code"] == "intelligence_off"
    assert post(api, "/api/v1/search", {"query": "crane"}, space).json() == {"results": [], "pending": 0}


def test_ask_answers_extractively_with_numbered_citations(make_space, api, run_jobs):
    """GIVEN indexed files and no LLM configured WHEN a question is asked THEN the answer is built
    from the most relevant sentences, each followed by [n], and citation n is that passage's
    path@version with a snippet."""
    space = make_space()
    space.write("cranes.md", CRANE)
    space.write("weather.md", "Storms close the harbour about ten days a year, mostly in November.")
    run_jobs()
    response = post(api, f"/api/v1/workspaces/{space.id}/ask", {"question": "When is the crane maintained?"}, space)
    assert response.status_code == 200, response.content
    body = response.json()
    assert "Maintenance of the crane happens every Sunday night. [1]" in body["answer"]
    assert body["citations"][0] == {"path": "cranes.md", "version": 1,
                                    "snippet": body["citations"][0]["snippet"]}
    assert "crane" in body["citations"][0]["snippet"]
    assert post(api, f"/api/v1/workspaces/{space.id}/ask", {"question": " "}, space).status_code == 400


class FakeChat:
    """A tiny OpenAI-compatible chat endpoint on a free local port."""

    def __init__(self, reply: str, status: int = 200) -> None:
        self.reply = reply
        self.status = status
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
                payload = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": fake.reply}}]})
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_chat(settings: Any) -> Iterator[FakeChat]:
    chat = FakeChat(reply="")
    settings.LLM_BASE_URL, settings.LLM_MODEL, settings.LLM_API_KEY = chat.base_url, "fake-model", "sk-test"
    yield chat
    chat.close()


def test_ask_uses_an_openai_compatible_endpoint_when_configured(make_space, api, run_jobs, fake_chat):
    """GIVEN LLM_BASE_URL and LLM_MODEL pointing at a chat-completions server WHEN a question is asked
    THEN the server gets the question and the passages fenced as untrusted, and its answer comes back
    with its citations renumbered to the passages it cited, in order."""
    space = make_space()
    space.write("cranes.md", CRANE)
    space.write("weather.md", "Storms close the harbour about ten days a year, mostly in November.")
    run_jobs()
    fake_chat.reply = "Storms close the harbour [2]; the crane is serviced on Sundays [1]. [7]"
    response = post(api, f"/api/v1/workspaces/{space.id}/ask", {"question": "When are crane and harbour closed?"},
                    space)
    assert response.status_code == 200, response.content
    sent = fake_chat.requests[0]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == "Bearer sk-test"
    assert sent["body"]["model"] == "fake-model"
    system, user = (m["content"] for m in sent["body"]["messages"])
    assert "untrusted" in system
    assert "When are crane and harbour closed?" in user
    assert "[1] cranes.md@1>>>" in user or "[1] weather.md@1>>>" in user
    assert "<<<UNTRUSTED" in user and "Maintenance of the crane happens every Sunday night." in user
    labels = [line.split("] ", 1)[1].rstrip(">") for line in user.splitlines() if line.startswith("<<<UNTRUSTED")]
    body = response.json()
    assert body["answer"] == "Storms close the harbour [1]; the crane is serviced on Sundays [2]."
    assert [f"{c['path']}@{c['version']}" for c in body["citations"]] == [labels[1], labels[0]]


def test_a_failing_llm_endpoint_is_a_502(make_space, api, run_jobs, fake_chat):
    """GIVEN the configured chat endpoint answers 500 WHEN a question is asked THEN 502 llm_unavailable."""
    space = make_space()
    space.write("cranes.md", CRANE)
    run_jobs()
    fake_chat.status = 500
    response = post(api, f"/api/v1/workspaces/{space.id}/ask", {"question": "Where is the crane?"}, space)
    assert response.status_code == 502 and response.json()["error"]["code"] == "llm_unavailable"


def test_without_chroma_hybrid_degrades_to_keyword_and_semantic_is_503(make_space, api, run_jobs, settings,
                                                                       monkeypatch):
    """GIVEN an indexed file WHEN Chroma is unreachable THEN a hybrid search still answers from the
    keyword index and says it is degraded, and a semantic search is 503 index_unavailable."""
    space = make_space()
    space.write("cranes.md", CRANE)
    run_jobs()
    settings.CHROMA_URL = "http://127.0.0.1:9"
    monkeypatch.setattr(vectors, "_client", None)
    monkeypatch.setattr(vectors, "_collections", {})
    url = f"/api/v1/workspaces/{space.id}/search"
    body = post(api, url, {"query": "gantry crane"}, space).json()
    assert body["degraded"] == ["semantic"] and body["results"][0]["path"] == "cranes.md"
    response = post(api, url, {"query": "gantry crane", "mode": "semantic"}, space)
    assert response.status_code == 503 and response.json()["error"]["code"] == "index_unavailable"


def test_index_state_lists_every_file_with_counts(make_space, api, run_jobs, django_assert_max_num_queries):
    """GIVEN indexed, binary and not-yet-indexed files WHEN the index state is listed THEN each file
    shows its status (with the reason where there is one), the counts cover the workspace, the list
    pages by path and filters by status, and the query count does not grow with the page."""
    space = make_space()
    for i in range(3):
        space.write(f"docs/{i}.md", f"Document {i} about pilots.")
    space.write("logo.png", bytes(range(256)))
    run_jobs()
    space.write("new.md", "Freshly written.")
    url = f"/api/v1/workspaces/{space.id}/index"
    with django_assert_max_num_queries(8):
        body = api.get(url, **space.headers).json()
    assert body["counts"] == {"pending": 1, "indexed": 3, "error": 0, "not_indexable": 1}
    rows = {row["path"]: row for row in body["results"]}
    assert rows["logo.png"]["status"] == "not_indexable" and rows["logo.png"]["reason"] == "binary content"
    assert rows["docs/0.md"]["status"] == "indexed" and rows["docs/0.md"]["indexed_version"] == 1
    assert rows["new.md"]["status"] == "pending" and rows["new.md"]["indexed_version"] is None
    page = api.get(url, {"limit": 2}, **space.headers).json()
    assert [r["path"] for r in page["results"]] == ["docs/0.md", "docs/1.md"] and page["next"]
    rest = api.get(url, {"limit": 2, "cursor": page["next"]}, **space.headers).json()
    assert [r["path"] for r in rest["results"]] == ["docs/2.md", "logo.png"]
    assert [r["path"] for r in api.get(url, {"status": "pending"}, **space.headers).json()["results"]] == ["new.md"]
    assert api.get(url, {"status": "bogus"}, **space.headers).status_code == 400
