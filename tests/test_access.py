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
