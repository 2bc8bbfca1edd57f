"""The Python client against the live server: files, workspaces, update() under concurrent writers,
a retry whose first answer was lost, and the event stream across dropped connections.

A small TCP proxy sits between the client and the server where a test needs to break the network:
it can cut every open connection, swallow the answer to a request the server did process, or
refuse WebSocket upgrades the way a proxy without WebSocket support would.
"""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from switchyard.client import (
    AlreadyExists,
    Client,
    NotFound,
    NotOwner,
    RetryPolicy,
    Stream,
    Unauthorized,
    VersionMismatch,
    Workspace,
)

_WS_UPGRADE = b"upgrade: websocket"


class Proxy:
    """A TCP forwarder to the live server whose connections a test can break on purpose."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.swallow_next = 0  # new connections whose first answer is cut off
        self.refuse_websockets = False
        self.upgrades_refused = 0
        self.swallowed = 0
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        first = client.recv(65536)
        if self.refuse_websockets and _WS_UPGRADE in first.lower():
            self.upgrades_refused += 1
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(self.target)
        with self._lock:
            swallow = self.swallow_next > 0
            self.swallow_next -= int(swallow)
            self._open += [client, upstream]
        upstream.sendall(first)
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        self._pump(upstream, client, swallow)

    def _pump(self, source: socket.socket, sink: socket.socket, swallow: bool) -> None:
        try:
            while data := source.recv(65536):
                if swallow:  # the server answered; the client never hears it
                    self.swallowed += 1
                    break
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            _shut(sock)

    def drop_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            _shut(sock)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


@pytest.fixture
def owner(make_user: Any) -> Any:
    return make_user("olga")


@pytest.fixture
def client(live: Any, owner: Any) -> Iterator[Client]:
    with Client(live.url, owner.token) as c:
        yield c


@pytest.fixture
def ws(client: Client) -> Workspace:
    return client.workspaces.create("client-tests", intelligence=False)


@pytest.fixture
def proxy(live: Any) -> Iterator[Proxy]:
    host, port = live.url.removeprefix("http://").split(":")
    p = Proxy((host, int(port)))
    yield p
    p.close()


def take(stream: Stream[Any], count: int) -> list[Any]:
    items = []
    for item in stream:
        items.append(item)
        if len(items) == count:
            break
    return items


# -- accounts and workspaces ---------------------------------------------------------------------------
def test_me_workspaces_members_and_rules(live: Any, client: Client, ws: Workspace, make_user: Any) -> None:
    """GIVEN an owner and a second user WHEN the owner creates a workspace, adds the user as editor and
    gives `research/` to itself alone THEN the user sees the workspace, writes elsewhere, and gets
    NotOwner under `research/`; a bad token is Unauthorized and a stranger's workspace NotFound."""
    assert client.me().username == "olga"
    assert ws.info is not None and ws.info.role == "owner" and ws.info.name == "client-tests"
    bob = make_user("bob")
    assert ws.members.set("bob", "editor").role == "editor"
    assert {m.username: m.role for m in ws.members.list().all()} == {"olga": "owner", "bob": "editor"}
    assert ws.rules.set("research/", ["olga"]).writers == ["olga"]
    assert [r.prefix for r in ws.rules.list()] == ["research/"]
    with Client(live.url, bob.token) as as_bob:
        assert [w.id for w in as_bob.workspaces.list()] == [ws.id]
        bobs = as_bob.workspace(ws.id)
        assert bobs.write("notes.md", "hi").version == 1
        with pytest.raises(NotOwner):
            bobs.write("research/x.md", "no")
        mine = as_bob.workspaces.create("bob's")
    with pytest.raises(NotFound):
        client.workspace(mine.id).get()
    with Client(live.url, "not-a-token", retry=RetryPolicy(max_attempts=1)) as stranger, \
            pytest.raises(Unauthorized):
        stranger.me()


# -- files -------------------------------------------------------------------------------------------
def test_file_round_trip_with_preconditions(ws: Workspace) -> None:
    """GIVEN a workspace WHEN a file with an awkward path is written, rewritten, read at each version,
    diffed, moved and deleted THEN each call returns what API.md says, and the preconditions refuse
    a stale If-Match (with the current content inline) and a second If-None-Match create."""
    path = "notes/a b#1/é.md"
    first = ws.write(path, "one\n", if_none_match=True)
    assert (first.version, first.size, first.author) == (1, 4, "olga")
    with pytest.raises(AlreadyExists):
        ws.write(path, "again\n", if_none_match=True)
    second = ws.write(path, "two\n", if_match=1)
    assert second.version == 2
    with pytest.raises(VersionMismatch) as stale:
        ws.write(path, "three\n", if_match=1)
    assert stale.value.current_version == 2 and stale.value.current_content == b"two\n"
    assert ws.read(path).content == b"two\n" and ws.read(path).version == 2
    assert ws.read(path, version=1).text == "one\n"
    assert ws.read_if_changed(path, 2) is None
    assert ws.read_if_changed(path, 1) is not None
    assert "-one" in ws.diff(path, 1, 2) and "+two" in ws.diff(path, 1, 2)
    assert [e.path for e in ws.tree("notes/")] == [path]
    moved = ws.move(path, "done/é.md", if_match=2)
    assert moved.source.deleted and moved.target.path == "done/é.md" and moved.target.version == 1
    with pytest.raises(NotFound):
        ws.read(path)
    assert [v.version for v in ws.history(path)] == [3, 2, 1]
    assert ws.delete("done/é.md", if_match=1).deleted
    assert list(ws.tree()) == []
    assert ws.write("bin.dat", bytes(range(256))).size == 256
    assert ws.read("bin.dat").content == bytes(range(256))


def test_update_with_concurrent_writers_loses_no_increment(live: Any, owner: Any, ws: Workspace) -> None:
    """GIVEN five agents, each with its own client, incrementing one counter file four times through
    update() WHEN they run at once THEN the counter ends at 20 and it has exactly 20 versions:
    every 412 was merged and retried, none overwrote another's write."""
    threads, rounds = 5, 4
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            with Client(live.url, owner.token) as mine:
                counter = mine.workspace(ws.id)
                start.wait()
                for _ in range(rounds):
                    counter.update("counter.txt", lambda old: str(int(old or b"0") + 1), max_attempts=100)
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert failures == []
    assert ws.read("counter.txt").content == str(threads * rounds).encode()
    assert [v.version for v in ws.history("counter.txt").all()] == list(range(threads * rounds, 0, -1))


def test_a_retry_after_a_lost_answer_writes_once(live: Any, owner: Any, ws: Workspace, proxy: Proxy) -> None:
    """GIVEN a network that cuts the answer to the first PUT after the server committed it
    WHEN the client writes THEN it retries with the same Idempotency-Key, gets the stored answer,
    and the file has one version, not two."""
    proxy.swallow_next = 1
    with Client(proxy.url, owner.token) as through_proxy:
        written = through_proxy.workspace(ws.id).write("once.txt", "payload")
    assert proxy.swallowed == 1 and written.version == 1
    assert [v.version for v in ws.history("once.txt")] == [1]


# -- events ------------------------------------------------------------------------------------------
def test_event_list_and_stream_replay_then_live(ws: Workspace) -> None:
    """GIVEN two writes already made WHEN listing events after 0 and streaming from after the first
    THEN the list has every event in seq order, and the stream replays the rest and then the live write."""
    ws.write("a.txt", "1")
    ws.write("b.txt", "2")
    events = list(ws.list_events(after=0).all())
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    written = [e for e in events if e.type == "file.written"]
    assert [e.target for e in written] == ["a.txt", "b.txt"] and written[0].actor == "olga"
    with ws.events(after=written[0].seq, idle_timeout=15) as stream:
        replayed = take(stream, 1)
        ws.write("c.txt", "3")
        live_one = take(stream, 1)
    assert [e.target for e in replayed + live_one] == ["b.txt", "c.txt"]
    assert stream.mode == "websocket"


def test_event_stream_reconnects_after_drops_without_gaps_or_duplicates(
        live: Any, owner: Any, ws: Workspace, proxy: Proxy) -> None:
    """GIVEN an event stream through a proxy WHEN the proxy cuts the connection twice while writes go on
    THEN the stream reconnects from its last seq and yields every event exactly once, in order."""
    with Client(proxy.url, owner.token) as through_proxy:
        stream = through_proxy.workspace(ws.id).events(after=0, idle_timeout=15, backoff_base=0.05)
        with stream:
            seen = []
            for batch in range(3):
                for i in range(3):
                    ws.write(f"f{batch}-{i}.txt", str(i))
                seen += take(stream, 3 if batch else 4)  # the first batch also has workspace.created
                proxy.drop_all()
            assert stream.connections >= 3
    seqs = [e.seq for e in seen]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert [e.target for e in seen if e.type == "file.written"] == [f"f{b}-{i}.txt" for b in range(3) for i in range(3)]


def test_event_stream_falls_back_to_polling_when_upgrades_fail(live: Any, owner: Any, ws: Workspace,
                                                                 proxy: Proxy) -> None:
    """GIVEN a proxy that answers every WebSocket upgrade with 502 WHEN streaming events
    THEN after a few failed upgrades the stream polls the event list and still yields every write."""
    proxy.refuse_websockets = True
    with Client(proxy.url, owner.token) as through_proxy:
        with through_proxy.workspace(ws.id).events(after=0, idle_timeout=15, backoff_base=0.02,
                                                   poll_interval=0.1) as stream:
            ws.write("p1.txt", "1")
            first = take(stream, 2)
            ws.write("p2.txt", "2")
            second = take(stream, 1)
            mode = stream.mode
    assert mode == "polling" and proxy.upgrades_refused == 3
    assert [e.type for e in first] == ["workspace.created", "file.written"]
    assert [e.target for e in second] == ["p2.txt"]


def test_agents_tokens_layout_and_health(live: Any, client: Client, ws: Workspace) -> None:
    """GIVEN a human account WHEN it creates an agent, lays the workspace out for it, and issues and
    revokes a personal token THEN the agent's one-time token works and it alone writes its directory,
    the revoked token is Unauthorized, and health answers without credentials."""
    bot = client.agents.create("bot")
    assert bot.kind == "agent" and bot.token and bot.on_behalf_of == "olga"
    layout = ws.create_layout(["bot"])
    assert "agent-bot/" in layout["directories"] and layout["rules"] == [{"prefix": "agent-bot/", "writers": ["bot"]}]
    with Client(live.url, bot.token) as as_bot:
        assert as_bot.me().username == "bot"
        assert as_bot.workspace(ws.id).write("agent-bot/notes.md", "mine").version == 1
    with pytest.raises(NotOwner):
        ws.write("agent-bot/notes.md", "not mine")
    issued = client.tokens.create("script")
    assert issued.token and issued.id in [t.id for t in client.tokens.list().all()]
    client.tokens.revoke(issued.id)
    with Client(live.url, issued.token, retry=RetryPolicy(max_attempts=1)) as revoked, pytest.raises(Unauthorized):
        revoked.me()
    with Client(live.url) as anonymous:
        assert anonymous.health()["checks"]["database"] == "ok"
