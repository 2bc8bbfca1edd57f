"""Indexing through the real job path: listener on commit -> RQ -> chunk, embed, Chroma, postings."""
from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Count

from search import services, vectors
from search.models import Chunk, IndexState, KeywordStats, Posting, TermStats
from tests import test_search_support as support
from tests.test_search_support import LONG_GUIDE, search

# The shared fixtures of the intelligence tests.
index_queue = support.index_queue
make_space = support.make_space
person = support.person
run_jobs = support.run_jobs

Status = IndexState.Status


def assert_frequencies_match_postings(space: support.Space) -> None:
    counted = dict(Posting.objects.filter(workspace_id=space.id).values("term").annotate(n=Count("id"))
                   .values_list("term", "n"))
    stored = {t: df for t, df in TermStats.objects.filter(workspace_id=space.id).values_list("term", "df") if df}
    assert counted and stored == counted


def test_a_written_file_is_indexed_by_its_job_and_found_in_every_mode(make_space, run_jobs):
    """GIVEN a workspace with intelligence on WHEN a Markdown file is written THEN it is pending
    until the index job runs, the job records `file.indexed`, and every search mode finds the passage
    with its path, version and exact character span."""
    space = make_space()
    text = "# Berths\n\nThe harbour crane moves containers between the quay and the ships at berth four.\n"
    space.write("ops/berths.md", text)
    assert space.state("ops/berths.md").status == Status.PENDING

    assert run_jobs() == 1
    state = space.state("ops/berths.md")
    assert (state.status, state.indexed_version, state.chunks) == (Status.INDEXED, 1, 1)
    assert space.events("file.indexed") == [{"path": "ops/berths.md", "version": 1, "status": "indexed",
                                             "chunks": 1, "embedded": 1, "reused": 0}]
    for mode in ("hybrid", "semantic", "keyword"):
        hits = search(space, "which machine loads containers onto ships?" if mode == "semantic" else "crane",
                      mode=mode)
        assert hits and hits[0]["path"] == "ops/berths.md", mode
        assert hits[0]["version"] == 1 and hits[0]["stale"] is False
        assert text[hits[0]["start"]:hits[0]["end"]] == text.strip()
    assert vectors.count(workspace_id=space.id) == 1


def test_a_new_version_reuses_unchanged_chunks_and_supersedes_the_old_one(make_space, run_jobs):
    """GIVEN an indexed multi-chunk file WHEN its last section is rewritten THEN until the job runs
    the old hit is marked stale with the file counted pending; afterwards only the changed chunks were
    embedded and nothing of the old version matches any more."""
    space = make_space()
    space.write("guide.md", LONG_GUIDE + "\n\n## Ending\n\nThe gantry is painted orange.\n")
    run_jobs()
    first = space.state("guide.md").chunks
    assert first >= 3

    space.write("guide.md", LONG_GUIDE + "\n\n## Ending\n\nThe gantry is painted bright turquoise.\n")
    from search.selectors import search as run

    before = run(workspace_ids=[space.id], query="gantry painted orange", mode="keyword")
    assert before.pending == 1
    assert [(h.chunk.version, h.stale) for h in before.hits] == [(1, True)]

    run_jobs()
    indexed = space.events("file.indexed")[-1]
    assert indexed["version"] == 2 and indexed["chunks"] == first
    assert indexed["embedded"] == 1 and indexed["reused"] == first - 1
    assert search(space, "orange", mode="keyword") == []
    assert {h["version"] for h in search(space, "turquoise gantry", mode="hybrid")} == {2}
    assert set(Chunk.objects.filter(workspace_id=space.id).values_list("version", flat=True)) == {2}
    assert vectors.count(workspace_id=space.id) == first
    stats = KeywordStats.objects.get(workspace_id=space.id)
    assert stats.chunks == first
    assert stats.tokens == sum(Chunk.objects.filter(workspace_id=space.id).values_list("length", flat=True))
    assert_frequencies_match_postings(space)


def test_deleted_files_stop_matching_and_moved_files_reuse_their_vectors(make_space, run_jobs):
    """GIVEN two indexed files WHEN one is deleted and the other moved THEN the deleted one matches
    nothing, the moved one is found at its new path only, and its vectors were not computed again."""
    space = make_space()
    space.write("inbox/ledger.txt", "The ledger lists every tugboat invoice paid in March.")
    space.write("inbox/notes.txt", "Dredging of the inner basin starts after the spring tides.")
    run_jobs()

    space.delete("inbox/notes.txt")
    space.move("inbox/ledger.txt", "agent-a/ledger.txt")
    assert run_jobs() == 3
    for mode in ("hybrid", "semantic", "keyword"):
        assert [h["path"] for h in search(space, "tugboat invoices dredging", mode=mode)] == ["agent-a/ledger.txt"]
    assert search(space, "dredging basin", mode="keyword") == []
    moved = [e for e in space.events("file.indexed") if e["path"] == "agent-a/ledger.txt"][0]
    assert (moved["embedded"], moved["reused"]) == (0, 1)
    assert space.state("inbox/notes.txt").deleted is True
    assert Posting.objects.filter(workspace_id=space.id, chunk__path__startswith="inbox/").count() == 0
    assert_frequencies_match_postings(space)


def test_binary_files_are_recorded_as_not_indexable(make_space, run_jobs):
    """GIVEN a binary file WHEN its job runs THEN its state says not indexable, with the reason."""
    space = make_space()
    space.write("images/logo.png", bytes(range(256)) * 4)
    run_jobs()
    state = space.state("images/logo.png")
    assert (state.status, state.reason, state.chunks) == (Status.NOT_INDEXABLE, "binary content", 0)


def test_a_failing_job_is_retried_then_shown_as_error(make_space, run_jobs, settings, monkeypatch):
    """GIVEN Chroma unreachable WHEN a file's job runs THEN RQ retries it, and after the last attempt
    the file is in `error` with the reason and a `file.index_failed` event: never silently lost."""
    space = make_space()
    monkeypatch.setattr(services, "RETRY_INTERVALS", [0, 0])  # retry at once: no scheduler in a burst
    settings.CHROMA_URL = "http://127.0.0.1:9"
    monkeypatch.setattr(vectors, "_client", None)
    monkeypatch.setattr(vectors, "_collections", {})
    space.write("a.md", "Pilot boats wait at the outer anchorage.")
    assert run_jobs() == 3
    state = space.state("a.md")
    assert state.status == Status.ERROR and state.attempts == 3
    assert "VectorStoreError" in state.reason and "gave up after 3 attempts" in state.reason
    assert space.events("file.index_failed")[0]["path"] == "a.md"


def test_the_sweep_requeues_lost_jobs_and_gives_up_after_repeated_losses(make_space, run_jobs, index_queue):
    """GIVEN a pending file whose job vanished from Redis WHEN the sweep runs 30 s later THEN it is
    enqueued again and indexed; a file whose job keeps vanishing ends in `error`."""
    space = make_space()
    space.write("lost.md", "The lighthouse keeper logs the fog signals.")
    index_queue.empty()  # Redis lost the job
    later = space.state("lost.md").queued_at + services.STUCK_AFTER + dt.timedelta(seconds=1)
    assert services.index_requeue_stuck(now=later) == 1
    assert run_jobs() == 1
    assert space.state("lost.md").status == Status.INDEXED

    space.write("cursed.md", "Nobody ever indexes this.")
    IndexState.objects.filter(workspace_id=space.id, path="cursed.md").update(requeues=services.MAX_REQUEUES)
    index_queue.empty()
    later = space.state("cursed.md").queued_at + services.STUCK_AFTER + dt.timedelta(seconds=1)
    assert services.index_requeue_stuck(now=later) == 1
    state = space.state("cursed.md")
    assert state.status == Status.ERROR and "lost" in state.reason


def test_the_sweep_leaves_jobs_that_are_still_queued_alone(make_space, index_queue):
    """GIVEN a pending file whose job is still waiting in the queue (a long backlog) WHEN the sweep
    runs THEN it enqueues nothing more and only looks again later."""
    space = make_space()
    space.write("slow.md", "Ships queue at the lock gates at dawn.")
    state = space.state("slow.md")
    assert services.index_requeue_stuck(now=state.queued_at + services.STUCK_AFTER * 2) == 0
    assert index_queue.count == 1
    assert space.state("slow.md").queued_at > state.queued_at


def test_without_intelligence_nothing_is_indexed_until_it_is_switched_on(make_space, run_jobs):
    """GIVEN a workspace with intelligence off WHEN a file is written THEN nothing is queued; WHEN
    intelligence is switched on THEN its existing files are indexed."""
    from workspace.services.workspaces import workspace_update

    space = make_space(intelligence=False)
    space.write("memo.txt", "Customs inspections happen on Tuesdays.")
    assert run_jobs() == 0
    assert not IndexState.objects.filter(workspace_id=space.id).exists()
    with space.capture(execute=True):
        workspace_update(access=space.access(), intelligence=True)
    assert run_jobs() == 2  # the workspace job, then the file's
    assert space.state("memo.txt").status == Status.INDEXED


def test_filters_narrow_both_retrievers(make_space, person, run_jobs):
    """GIVEN files by two authors, in two directories, for two tasks WHEN searching with a prefix,
    author, task or time filter THEN only matching files come back, in every mode."""
    from search.selectors import Filters

    space = make_space()
    other = person()
    space.add_member(other.user, "editor")
    space.write("north/quay.md", "Quay wall inspection found cracks near bollard nine.", task_id="tk1")
    space.write("south/quay.md", "Quay wall inspection found the south quay in good repair.",
                user=other.user, task_id="tk2")
    run_jobs()
    for mode in ("hybrid", "semantic", "keyword"):
        def paths(filters: Filters, mode: str = mode) -> list[str]:
            return [h["path"] for h in search(space, "quay wall inspection", mode=mode, filters=filters)]

        assert paths(Filters()) and set(paths(Filters())) == {"north/quay.md", "south/quay.md"}
        assert paths(Filters(prefix="north/")) == ["north/quay.md"]
        assert paths(Filters(prefix="North/")) == []
        assert paths(Filters(author_ids=(other.user.pk,))) == ["south/quay.md"]
        assert paths(Filters(author_ids=())) == []
        assert paths(Filters(task="tk1")) == ["north/quay.md"]
        future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert paths(Filters(since=future)) == []
        assert len(paths(Filters(until=future))) == 2


def test_semantic_filters_fall_back_to_chroma_when_the_unfiltered_neighbours_miss(make_space, run_jobs,
                                                                                  monkeypatch):
    """GIVEN a filter that the nearest unfiltered neighbours do not satisfy WHEN searching semantically
    THEN Chroma is asked to filter by the vectors' metadata and the matching file is still found."""
    from search import selectors
    from search.selectors import Filters

    space = make_space()
    space.write("deep/a/b/target.md", "Tide tables for the northern approach channel.", task_id="tk9")
    for i in range(4):
        space.write(f"top/{i}.md", f"Tide tables number {i} for the approach channels.")
    run_jobs()
    monkeypatch.setattr(selectors, "FILTERED_DEPTH", 1)
    for filters in (Filters(prefix="deep/a/"), Filters(task="tk9")):
        hits = search(space, "tide tables approach channel", mode="semantic", filters=filters)
        assert [h["path"] for h in hits] == ["deep/a/b/target.md"]


def test_keyword_ranking_is_bm25(make_space, run_jobs):
    """GIVEN documents mentioning a rare term more or less often WHEN ranked by keyword THEN the
    document where it weighs most ranks first and a document without it is absent."""
    space = make_space()
    space.write("a.txt", "Salinity was measured once near the estuary, along with temperature and depth.")
    space.write("b.txt", "Salinity, salinity and salinity again: the salinity survey of the estuary.")
    space.write("c.txt", "Temperature and depth were measured near the estuary.")
    run_jobs()
    hits = search(space, "salinity", mode="keyword")
    assert [h["path"] for h in hits] == ["b.txt", "a.txt"]
    assert hits[0]["score"] > hits[1]["score"] > 0


def test_reindex_command_rebuilds_the_index_in_process(make_space, run_jobs, capsys):
    """GIVEN an indexed workspace whose vectors were lost WHEN `manage.py reindex --workspace WS
    --sync` runs THEN every file is indexed again and searchable, with progress shown."""
    space = make_space()
    space.write("one.md", "Mooring lines are checked every watch.")
    space.write("two.md", "The harbour master approves every berth change.")
    run_jobs()
    vectors.drop(workspace_id=space.id)
    call_command("reindex", "--workspace", space.id, "--sync")
    out = capsys.readouterr()
    assert "Indexed 2 files; 0 failed." in out.out
    assert "2/2" in out.err
    assert [h["path"] for h in search(space, "who approves berth changes?", mode="semantic")][0] == "two.md"


def test_reindex_command_queues_every_file_for_the_workers(make_space, run_jobs, index_queue):
    """GIVEN an indexed workspace WHEN `manage.py reindex --workspace WS --no-wait` runs THEN every
    file is pending again with a job queued, which the workers index; an unknown workspace or one
    with intelligence off is refused."""
    space = make_space()
    space.write("one.md", "Mooring lines are checked every watch.")
    space.write("two.md", "The harbour master approves every berth change.")
    run_jobs()
    call_command("reindex", "--workspace", space.id, "--no-wait")
    assert index_queue.count == 2
    assert {space.state(p).status for p in ("one.md", "two.md")} == {Status.PENDING}
    assert run_jobs() == 2
    assert {space.state(p).status for p in ("one.md", "two.md")} == {Status.INDEXED}
    with pytest.raises(CommandError, match="No workspace"):
        call_command("reindex", "--workspace", "ws_missing")
    with pytest.raises(CommandError, match="Intelligence is off"):
        call_command("reindex", "--workspace", make_space(intelligence=False).id)
