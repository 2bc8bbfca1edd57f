"""Intelligence over HTTP (API.md "Intelligence"): search, ask, index state."""
from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from search import answers, selectors, vectors
from search.models import IndexState
from workspace.access import readable_workspace_ids, workspace_for
from workspace.api.base import ApiView
from workspace.api.pagination import keyset_page
from workspace.api.schema import errors, page_of
from workspace.errors import Invalid, Unavailable
from workspace.models import Role, Workspace

MAX_QUERY_CHARS = 2000


class SearchInput(serializers.Serializer):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS)
    k = serializers.IntegerField(min_value=1, max_value=100, default=10)
    mode = serializers.ChoiceField(choices=selectors.MODES, default="hybrid")
    prefix = serializers.CharField(max_length=1100, required=False, allow_blank=True, trim_whitespace=False)
    author = serializers.CharField(max_length=150, required=False)
    task = serializers.CharField(max_length=32, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class HitOutput(serializers.Serializer):
    workspace = serializers.CharField()
    path = serializers.CharField()
    version = serializers.IntegerField()
    score = serializers.FloatField()
    snippet = serializers.CharField()
    start = serializers.IntegerField(help_text="Character offset of the passage in the version's text")
    end = serializers.IntegerField()
    stale = serializers.BooleanField(help_text="A newer version of the file is waiting to be indexed")


class SearchOutput(serializers.Serializer):
    results = HitOutput(many=True)
    pending = serializers.IntegerField(help_text="Files of the searched workspaces waiting to be indexed")
    degraded = serializers.ListField(child=serializers.CharField(), required=False,
                                     help_text="Retrievers that were unavailable (results are keyword-only)")


def _search(data: dict[str, Any], workspace_ids: list[str]) -> Response:
    try:
        result = selectors.search(workspace_ids=workspace_ids, query=data["query"], k=data["k"],
                                  mode=data["mode"], filters=selectors.build_filters(data))
    except vectors.VectorStoreError as exc:
        raise Unavailable("index_unavailable", "The vector index is unavailable; try mode 'keyword'.") from exc
    body: dict[str, Any] = {"results": [hit.as_dict() for hit in result.hits], "pending": result.pending}
    if result.degraded:
        body["degraded"] = result.degraded
    return Response(body)


class WorkspaceSearchView(ApiView):
    @extend_schema(operation_id="workspace_search", request=SearchInput,
                   responses={200: SearchOutput, **errors(400, 401, 404, 409, 503)})
    def post(self, request: Request, ws: str) -> Response:
        """Hybrid (semantic + keyword, fused by reciprocal rank), semantic or keyword search in one
        workspace. One result per file, its best passage; deleted files and superseded versions
        never match."""
        access = workspace_for(request.user, ws, need=Role.VIEWER)
        selectors.require_intelligence(access.workspace)
        return _search(self.data(SearchInput), [access.workspace_id])


class SearchView(ApiView):
    @extend_schema(operation_id="search", request=SearchInput,
                   responses={200: SearchOutput, **errors(400, 401, 503)})
    def post(self, request: Request) -> Response:
        """The same search across every workspace the caller can read (and no other)."""
        data = self.data(SearchInput)
        readable = readable_workspace_ids(request.user)
        workspace_ids = list(Workspace.objects.filter(pk__in=readable, intelligence=True)
                             .values_list("pk", flat=True))
        return _search(data, workspace_ids)


class AskView(ApiView):
    @extend_schema_serializer(component_name="AskInput")
    class InputSerializer(serializers.Serializer):
        question = serializers.CharField(max_length=MAX_QUERY_CHARS)

    @extend_schema_serializer(component_name="Answer")
    class OutputSerializer(serializers.Serializer):
        answer = serializers.CharField()
        citations = inline_serializer("Citation", {
            "path": serializers.CharField(), "version": serializers.IntegerField(),
            "snippet": serializers.CharField()}, many=True)
        pending = serializers.IntegerField()

    @extend_schema(operation_id="workspace_ask", request=InputSerializer,
                   responses={200: OutputSerializer, **errors(400, 401, 404, 409, 502)})
    def post(self, request: Request, ws: str) -> Response:
        """Answer a question from the workspace's files. Citations [n] in the answer are the n-th
        entry of `citations`, each a passage of `path@version`."""
        access = workspace_for(request.user, ws, need=Role.VIEWER)
        selectors.require_intelligence(access.workspace)
        data = self.data(self.InputSerializer)
        answer = answers.ask(workspace_ids=[access.workspace_id], question=data["question"])
        return Response({"answer": answer.text, "citations": answer.citations, "pending": answer.pending})


class IndexEntry(serializers.Serializer):
    path = serializers.CharField()
    version = serializers.IntegerField(help_text="The newest version known to the index")
    indexed_version = serializers.IntegerField(allow_null=True, help_text="The version that is searchable")
    status = serializers.ChoiceField(choices=IndexState.Status.choices)
    reason = serializers.CharField(allow_null=True, help_text="The error, or why the file is not indexable")
    chunks = serializers.IntegerField()
    attempts = serializers.IntegerField()
    updated_at = serializers.DateTimeField()


def _entry(state: IndexState) -> dict[str, Any]:
    return {"path": state.path, "version": state.version, "indexed_version": state.indexed_version,
            "status": state.status, "reason": state.reason or None, "chunks": state.chunks,
            "attempts": state.attempts, "updated_at": state.updated_at.isoformat().replace("+00:00", "Z")}


class IndexView(ApiView):
    @extend_schema(operation_id="index_state", parameters=[
        OpenApiParameter("status", OpenApiTypes.STR, enum=[s.value for s in IndexState.Status]),
    ], responses={200: page_of("IndexPage", IndexEntry()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        """Index state per file, by path, with `counts` per status over the whole workspace."""
        access = workspace_for(request.user, ws, need=Role.VIEWER)
        status = request.query_params.get("status") or None
        if status is not None and status not in IndexState.Status.values:
            raise Invalid("invalid_status", f"'status' is one of {', '.join(IndexState.Status.values)}.")
        qs = selectors.index_states(workspace_id=access.workspace_id, status=status)
        page = keyset_page(qs, request=request, scope=f"index:{ws}:{status or ''}", key="path",
                           render=lambda rows: [_entry(s) for s in rows])
        page["counts"] = selectors.index_counts(workspace_id=access.workspace_id)
        return Response(page)
