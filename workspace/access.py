"""The one permission gate for workspaces (STYLE rule 3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections, router

from switchyard.db.plain import Plain
from switchyard.db.rows import Columns
from workspace.errors import Forbidden, NotFound
from workspace.models import Membership, Role, Workspace

_WORKSPACE = Columns(Workspace, "w")
_MEMBER_SQL = (
    f"SELECT m.role, {_WORKSPACE.sql}"  # noqa: S608
    f" FROM {Workspace._meta.db_table} w JOIN {Membership._meta.db_table} m ON m.workspace_id = w.id"
    " WHERE w.id = %s AND m.user_id = %s"
)


@dataclass(frozen=True)
class Access:
    workspace: Workspace
    user: Any
    role: Role

    def at_least(self, need: Role) -> bool:
        return self.role.at_least(need)


def workspace_for(user: Any, ws_id: str, *, need: Role = Role.VIEWER) -> Access:
    """The workspace `ws_id` as seen by `user`, who must hold at least `need`.

    A missing workspace and one the user is not a member of are the same 404, so that a
    stranger learns nothing; a member without the role gets 403.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not isinstance(ws_id, str):
        raise NotFound("workspace")
    # Every workspace request runs this: one plain statement, no ORM query to build.
    connection = connections[router.db_for_read(Workspace)]
    with Plain(connection) as db:
        row = db.one(_MEMBER_SQL, [ws_id, user.pk])
    if row is None:
        raise NotFound("workspace")
    role = Role(row[0])
    workspace = _WORKSPACE.instance(connection, row[1:])
    if not role.at_least(need):
        raise Forbidden("forbidden", f"This needs the {Role(need).value} role in the workspace; you are {role.value}.",
                        required_role=Role(need).value, role=role.value)
    return Access(workspace=workspace, user=user, role=role)


def readable_workspace_ids(user: Any) -> list[str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return []
    return list(Membership.objects.filter(user_id=user.pk).values_list("workspace_id", flat=True))
