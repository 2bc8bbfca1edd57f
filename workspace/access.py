"""The one permission gate for workspaces (STYLE rule 3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workspace.errors import Forbidden, NotFound
from workspace.models import Membership, Role, Workspace


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
    membership = (
        Membership.objects.select_related("workspace").filter(workspace_id=ws_id, user_id=user.pk).first()
    )
    if membership is None:
        raise NotFound("workspace")
    role = Role(membership.role)
    if not role.at_least(need):
        raise Forbidden("forbidden", f"This needs the {Role(need).value} role in the workspace; you are {role.value}.",
                        required_role=Role(need).value, role=role.value)
    return Access(workspace=membership.workspace, user=user, role=role)


def readable_workspace_ids(user: Any) -> list[str]:
    if user is None or not getattr(user, "is_authenticated", False):
        return []
    return list(Membership.objects.filter(user_id=user.pk).values_list("workspace_id", flat=True))
