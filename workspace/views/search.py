"""Search and ask: hits and answers whose citations open the exact version they cite.

The search app is used the way its API uses it (search.selectors.search, search.answers.ask),
imported inside the views so pages that do not search never load it.
"""
from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET

from workspace.access import Access, readable_workspace_ids
from workspace.errors import ServiceError
from workspace.models import Workspace
from workspace.services import files as file_svc
from workspace.views.common import page_access, workspace_page
from workspace.views.present import Urls, as_text

MAX_QUERY = 2000
RESULTS = 20
_CITATION = re.compile(r"\[(\d{1,3})\]")
_MODES = ("hybrid", "semantic", "keyword")


def _params(request: HttpRequest) -> tuple[str, str, str]:
    query = request.GET.get("q", "").strip()[:MAX_QUERY]
    mode = request.GET.get("mode", "hybrid")
    question = request.GET.get("question", "").strip()[:MAX_QUERY]
    return query, mode if mode in _MODES else "hybrid", question


def _hits(workspace_ids: list[str], query: str, mode: str, names: dict[str, str]) -> dict[str, Any]:
    from search import selectors, vectors

    try:
        result = selectors.search(workspace_ids=workspace_ids, query=query, k=RESULTS, mode=mode)
    except vectors.VectorStoreError:
        return {"error": "The vector index is unavailable right now; try the keyword mode.", "hits": []}
    hits = []
    for hit in result.hits:
        chunk = hit.chunk
        urls = Urls(chunk.workspace_id)
        hits.append({
            "path": chunk.path, "version": chunk.version, "snippet": hit.snippet, "score": round(hit.score, 4),
            "stale": hit.stale, "workspace": names.get(chunk.workspace_id, ""),
            "url": urls.file(chunk.path, chunk.version, start=chunk.start, end=chunk.end) + "#cited",
        })
    return {"hits": hits, "pending": result.pending, "degraded": result.degraded, "error": ""}


def _passage(access: Access, path: str, version: int, snippet: str) -> tuple[int, int] | None:
    """Where a citation's snippet sits in its version (character offsets), to mark it there."""
    core = snippet.strip().strip("…").strip()
    if not core:
        return None
    try:
        _, data = file_svc.file_read(access=access, path=path, version=version)
    except ServiceError:
        return None
    text = as_text(data)
    if text is None:
        return None
    at = text.find(core)
    return (at, at + len(core)) if at >= 0 else None


def _answer(access: Access, question: str) -> dict[str, Any]:
    from search import answers, vectors

    try:
        answer = answers.ask(workspace_ids=[access.workspace_id], question=question)
    except vectors.VectorStoreError:
        return {"error": "The vector index is unavailable right now; ask again in a moment."}
    except ServiceError as exc:
        return {"error": exc.message}
    urls = Urls(access.workspace_id)
    citations = []
    for number, cite in enumerate(answer.citations, start=1):
        span = _passage(access, cite["path"], cite["version"], cite.get("snippet", ""))
        extra = {"start": span[0], "end": span[1]} if span else {}
        citations.append({**cite, "number": number,
                          "url": urls.file(cite["path"], cite["version"], **extra) + ("#cited" if span else "")})
    return {"text": _link_citations(answer.text, citations), "citations": citations, "pending": answer.pending,
            "error": ""}


def _link_citations(text: str, citations: list[dict[str, Any]]) -> SafeString:
    """The answer, escaped, with each [n] a link to the n-th citation's version."""
    parts = []
    last = 0
    for match in _CITATION.finditer(text):
        parts.append(escape(text[last:match.start()]))
        n = int(match.group(1))
        if 1 <= n <= len(citations):
            cite = citations[n - 1]
            parts.append(format_html('<a href="{}" class="cite" title="{}@{}">[{}]</a>', cite["url"], cite["path"],
                                     cite["version"], n))
        else:
            parts.append(escape(match.group(0)))
        last = match.end()
    parts.append(escape(text[last:]))
    return mark_safe("".join(str(p) for p in parts))  # noqa: S308 - every part is escaped or format_html


@login_required
@require_GET
def search_page(request: HttpRequest, ws: str) -> HttpResponse:
    access = page_access(request, ws)
    query, mode, question = _params(request)
    context: dict[str, Any] = {"urls": Urls(access.workspace_id), "query": query, "mode": mode,
                               "question": question, "modes": _MODES}
    if request.GET.get("fragment") is None and access.workspace.intelligence:
        if query:
            context["search"] = _hits([access.workspace_id], query, mode, {})
        if question:
            context["answer"] = _answer(access, question)
    if access.workspace.intelligence:
        from search.selectors import index_counts

        context["index"] = index_counts(workspace_id=access.workspace_id)
    return workspace_page(request, access, "workspace/search.html", context, tab="search",
                          fragments={"index": "workspace/_index_state.html"})


@login_required
@require_GET
def global_search_page(request: HttpRequest) -> HttpResponse:
    """The same search across every workspace the person can read (and no other)."""
    query, mode, _ = _params(request)
    context: dict[str, Any] = {"query": query, "mode": mode, "modes": _MODES}
    if query:
        readable = Workspace.objects.filter(pk__in=readable_workspace_ids(request.user), intelligence=True)
        names = dict(readable.values_list("pk", "name"))
        context["search"] = _hits(list(names), query, mode, names)
    return render(request, "search.html", context)
