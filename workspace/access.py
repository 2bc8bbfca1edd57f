"""The one permission gate for workspaces (STYLE rule 3)."""
from __future__ import annotations

from typing import Any

from django.db import connections, router

from switchyard.db.plain import Plain
from switchyard.db.rows import Columns
from workspace.errors import Forbidden, NotFound
from workspace.models import Membership, Role, Workspace

_WORKSPACE = Columns(Workspace, "w")
_ID = _WORKSPACE.attnames.index("id")
_MEMBER_SQL = (
    f"SELECT m.role, {_WORKSPACE.sql}"  # noqa: S608
    f" FROM {Workspace._meta.db_table} w JOIN {Membership._meta.db_table} m ON m.workspace_id = w.id"
    " WHERE w.id = %s AND m.user_id = %s"
)
# Where it was read with the user, the membership in the workspace the request names is handed
# to the next `workspace_for` of that user and workspace instead of being read again.
_PREFETCHED = "_switchyard_membership"


def membership_select(user_alias: str) -> tuple[str, str, int]:
    """For a statement that reads a user (as `user_alias`): the columns to add to its select list,
    the joins to add after its FROM (with one parameter, the workspace's id), and how many
    columns they are. Their values go to `membership_prefetched`."""
    joins = (f" LEFT JOIN {Membership._meta.db_table} m ON m.user_id = {user_alias}.id AND m.workspace_id = %s"
             f" LEFT JOIN {Workspace._meta.db_table} w ON w.id = m.workspace_id")
    return f"m.role, {_WORKSPACE.sql}", joins, 1 + len(_WORKSPACE)


def membership_prefetched(user: Any, ws_id: str, connection: Any, values: tuple[Any, ...]) -> None:
    """Keep on `user` its membership in `ws_id` as read (`values`: the `membership_select` columns;
    a NULL role means none) for the first `workspace_for(user, ws_id)` to take. The bearer-token
    lookup reads it in the same statement as the token when the URL names a workspace: one
    statement per API request instead of two."""
    user.__dict__[_PREFETCHED] = (ws_id, connection, tuple(values))


class Access:
    """What `user` may do in one workspace: its id, the user, the user's role, and the workspace.

    Most requests need only the id, so `workspace_for` hands over the row it read and the
    `Workspace` instance is built from it on first use (building it cost more than reading it)."""

    __slots__ = ("_row", "_workspace", "role", "user", "workspace_id")

    def __init__(self, *, user: Any, role: Role, workspace: Workspace | None = None,
                 row: tuple[Any, tuple[Any, ...]] | None = None) -> None:
        """`workspace`, or `row`: (the connection it was read on, its columns in `_WORKSPACE` order)."""
        if (workspace is None) == (row is None):
            raise TypeError("Access needs a workspace or the row of one, not both")
        self.user, self.role = user, role
        self._workspace, self._row = workspace, row
        self.workspace_id: str = workspace.id if workspace is not None else row[1][_ID]  # type: ignore[index]

    @property
    def workspace(self) -> Workspace:
        if self._workspace is None:
            connection, values = self._row  # type: ignore[misc]
            self._workspace, self._row = _WORKSPACE.instance(connection, values), None
        return self._workspace

    def at_least(self, need: Role) -> bool:
        return self.role.at_least(need)

    def __repr__(self) -> str:
        return f"<Access {self.user} {self.role.value} in {self.workspace_id}>"


def workspace_for(user: Any, ws_id: str, *, need: Role = Role.VIEWER) -> Access:
    """The workspace `ws_id` as seen by `user`, who must hold at least `need`.

    A missing workspace and one the user is not a member of are the same 404, so that a
    stranger learns nothing; a member without the role gets 403.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not isinstance(ws_id, str):
        raise NotFound("workspace")
    # Taken once: a later check in the same request (after a change of role, say) reads afresh.
    prefetched = user.__dict__.pop(_PREFETCHED, None)
    if prefetched is not None and prefetched[0] == ws_id:
        _, connection, row = prefetched
    else:
        # Every workspace request runs this: one plain statement, no ORM query to build.
        connection = connections[router.db_for_read(Workspace)]
        with Plain(connection) as db:
            row = db.one(_MEMBER_SQL, [ws_id, user.pk])
    if row is None or row[0] is None:
        raise NotFound("workspace")
    role = Role(row[0])
    if not role.at_least(need):
        raise Forbidden("forbidden", f"This needs the {Role(need).value} role in the workspace; you are {role.value}.",
                        required_role=Role(need).value, role=role.value)
    return Access(user=user, role=role, row=(connection, row[1:]))


def readable_workspace_ids(user: Any) -> list[str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return []
    return list(Membership.objects.filter(user_id=user.pk).values_list("workspace_id", flat=True))
