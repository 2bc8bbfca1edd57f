"""workspace_for: the one permission gate, and the Access it hands over."""
from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from workspace.access import Access, workspace_for
from workspace.errors import Forbidden, NotFound
from workspace.models import Role
from workspace.services.workspaces import member_set, workspace_create


@pytest.mark.django_db
def test_access_carries_the_id_and_role_and_builds_the_workspace_from_the_row_it_read(make_user):
    """GIVEN a member WHEN workspace_for lets her in THEN the access has the workspace's id and her
    role at once, and its workspace is the stored row, built on first use without another query."""
    ada = make_user("ada")
    ws = workspace_create(user=ada.user, name="Atlas", intelligence=False)
    with CaptureQueriesContext(connection) as queries:
        access = workspace_for(ada.user, ws.id)
        assert access.workspace_id == ws.id and access.role == Role.OWNER and access.user == ada.user
        built = access.workspace
        assert access.workspace is built
    assert len(queries) == 1
    assert (built.pk, built.name, built.intelligence, built.created_by_id, built.created_at) == \
        (ws.pk, "Atlas", False, ada.user.pk, ws.created_at)


@pytest.mark.django_db
def test_the_gate_refuses_strangers_and_too_low_roles(make_user):
    ada, bea, cy = make_user("ada"), make_user("bea"), make_user("cy")
    ws = workspace_create(user=ada.user, name="Gate", intelligence=False)
    member_set(access=workspace_for(ada.user, ws.id), username="bea", role=Role.VIEWER)
    with pytest.raises(NotFound):
        workspace_for(cy.user, ws.id)
    with pytest.raises(NotFound):
        workspace_for(ada.user, "ws_missing")
    with pytest.raises(Forbidden) as refused:
        workspace_for(bea.user, ws.id, need=Role.EDITOR)
    assert refused.value.details["role"] == "viewer"


@pytest.mark.django_db
def test_an_access_is_made_from_a_workspace_or_a_row_not_both(make_user):
    ada = make_user("ada")
    ws = workspace_create(user=ada.user, name="Either", intelligence=False)
    assert Access(user=ada.user, role=Role.EDITOR, workspace=ws).workspace_id == ws.id
    with pytest.raises(TypeError):
        Access(user=ada.user, role=Role.EDITOR)
    with pytest.raises(TypeError):
        Access(user=ada.user, role=Role.EDITOR, workspace=ws, row=(connection, ()))


@pytest.mark.django_db
def test_a_bearer_request_to_a_workspace_reads_token_and_membership_in_one_statement(make_user):
    """GIVEN a member with a bearer token WHEN she calls a workspace endpoint THEN her token and her
    membership are read in one statement (no second lookup by the gate), and what she gets is what
    her role allows: the list for a viewer, 403 for a viewer's lock, 404 for a stranger or a
    workspace that does not exist."""
    from rest_framework.test import APIClient

    ada, bea, cy = make_user("ada"), make_user("bea"), make_user("cy")
    ws = workspace_create(user=ada.user, name="One", intelligence=False)
    member_set(access=workspace_for(ada.user, ws.id), username="bea", role=Role.VIEWER)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {bea.token}")
    client.get("/api/v1/me")  # last_used_at is written once a minute: not in the counted request
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/api/v1/workspaces/{ws.id}/locks")
    assert response.status_code == 200, response.content
    membership_reads = [q["sql"] for q in queries.captured_queries if "workspace_membership" in q["sql"]]
    assert len(membership_reads) == 1 and "agents_apitoken" in membership_reads[0]
    refused = client.post(f"/api/v1/workspaces/{ws.id}/locks", {"path": "a.txt"}, format="json")
    assert refused.status_code == 403 and refused.json()["error"]["role"] == "viewer"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {cy.token}")
    assert client.get(f"/api/v1/workspaces/{ws.id}/locks").status_code == 404
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {ada.token}")
    assert client.get("/api/v1/workspaces/ws_missing/locks").status_code == 404
    assert client.post(f"/api/v1/workspaces/{ws.id}/locks", {"path": "a.txt"}, format="json").status_code == 201


@pytest.mark.django_db
def test_a_membership_read_with_the_token_serves_one_check_of_that_workspace_only(make_user):
    """GIVEN a user authenticated with her membership in workspace A read along WHEN the gate checks A
    THEN it uses that read (no query); a second check of A, after her role changed, reads the new
    role; a check of workspace B reads B."""
    from agents.authentication import user_for_token

    ada, bea = make_user("ada"), make_user("bea")
    a = workspace_create(user=ada.user, name="A", intelligence=False)
    b = workspace_create(user=ada.user, name="B", intelligence=False)
    owner = workspace_for(ada.user, a.id)
    member_set(access=owner, username="bea", role=Role.EDITOR)
    member_set(access=workspace_for(ada.user, b.id), username="bea", role=Role.VIEWER)
    user_for_token(bea.token)  # last_used_at written: not counted below
    user = user_for_token(bea.token, workspace_id=a.id)
    with CaptureQueriesContext(connection) as queries:
        first = workspace_for(user, a.id, need=Role.EDITOR)
    assert len(queries) == 0
    assert first.role == Role.EDITOR and first.workspace.name == "A"
    member_set(access=workspace_for(ada.user, a.id), username="bea", role=Role.VIEWER)
    with pytest.raises(Forbidden):
        workspace_for(user, a.id, need=Role.EDITOR)
    user = user_for_token(bea.token, workspace_id=a.id)
    seen = workspace_for(user, b.id)
    assert seen.role == Role.VIEWER and seen.workspace_id == b.id
    stranger = user_for_token(make_user("cy").token, workspace_id=a.id)
    with CaptureQueriesContext(connection) as queries, pytest.raises(NotFound):
        workspace_for(stranger, a.id)
    assert len(queries) == 0
