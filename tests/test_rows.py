"""The plain-SQL reads every request makes (the bearer token and the workspace membership) give the
same instances the ORM gives, on SQLite and on PostgreSQL."""
from __future__ import annotations

from datetime import UTC

import pytest
from django.db import connection
from django.forms.models import model_to_dict

from agents.authentication import user_for_token
from agents.models import ApiToken, User
from agents.services import token_revoke
from switchyard.db.rows import Columns
from workspace.access import workspace_for
from workspace.errors import Forbidden, NotFound
from workspace.models import Role, Workspace
from workspace.services.workspaces import member_set, workspace_create

pytestmark = pytest.mark.django_db


def _fields(instance) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in instance._meta.concrete_fields}


def test_columns_make_the_instance_the_orm_makes():
    """GIVEN a workspace row WHEN read through Columns THEN every field (aware datetimes, booleans,
    JSON, counters) equals the ORM's instance, and the instance is a saved one."""
    owner = User.objects.create_user("owner", "owner@example.com", "a long test password")
    ws = workspace_create(user=owner, name="rows", intelligence=True)
    columns = Columns(Workspace, "w")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {columns.sql} FROM {Workspace._meta.db_table} w WHERE w.id = %s", [ws.id])
        made = columns.instance(connection, cursor.fetchone())
    expected = Workspace.objects.get(pk=ws.id)
    assert _fields(made) == _fields(expected)
    assert made.created_at.tzinfo is not None and made.created_at.utcoffset() == UTC.utcoffset(None)
    assert made._state.adding is False and made._state.db == connection.alias
    made.name = "renamed"
    made.save(update_fields=["name"])
    assert Workspace.objects.get(pk=ws.id).name == "renamed"


def test_a_token_gives_its_user_and_the_agents_creator_and_nothing_once_revoked(make_user, make_agent):
    """GIVEN an agent created by a human WHEN its token authenticates THEN the user is the agent, with
    the creator (on_behalf_of) loaded as the ORM loads it; a revoked token and an unknown one give
    nobody."""
    owner = make_user("olivia")
    agent = make_agent("ada", created_by=owner.user)
    user = user_for_token(agent.token)
    assert user is not None and user.pk == agent.user.pk
    assert model_to_dict(user) == model_to_dict(User.objects.get(pk=agent.user.pk))
    assert user.on_behalf_of is not None and user.on_behalf_of.username == "olivia"
    human = user_for_token(owner.token)
    assert human is not None and human.username == "olivia" and human.on_behalf_of is None
    assert user_for_token(agent.token + "x") is None
    token_revoke(user=agent.user, token_id=ApiToken.objects.get(user=agent.user).pk)
    assert user_for_token(agent.token) is None


def test_workspace_for_reads_the_role_and_refuses_strangers(make_user):
    """GIVEN a workspace with an owner and a viewer WHEN each asks THEN each gets the workspace with
    their role; a stranger gets 404 and a viewer asking for the editor role 403."""
    owner, viewer, stranger = make_user("o"), make_user("v"), make_user("s")
    ws = workspace_create(user=owner.user, name="gate", intelligence=False)
    member_set(access=workspace_for(owner.user, ws.id), username="v", role=Role.VIEWER)
    seen = workspace_for(viewer.user, ws.id)
    assert seen.role == Role.VIEWER and seen.workspace.pk == ws.id and seen.workspace.name == "gate"
    assert workspace_for(owner.user, ws.id).role == Role.OWNER
    with pytest.raises(NotFound):
        workspace_for(stranger.user, ws.id)
    with pytest.raises(Forbidden):
        workspace_for(viewer.user, ws.id, need=Role.EDITOR)
