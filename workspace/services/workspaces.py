"""Workspaces, members, directory ownership and the standard layout."""
from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.transaction import TransactionManagementError

from workspace.access import Access
from workspace.errors import Forbidden, Invalid, NotFound
from workspace.ids import new_id
from workspace.models import DirectoryRule, Membership, Role, Workspace
from workspace.paths import validate_prefix
from workspace.services.events import event_record


def _require_admin(access: Access) -> None:
    """Workspace settings are for admins and the owner; the rule lives here, not only in the views."""
    if not access.at_least(Role.ADMIN):
        raise Forbidden("forbidden", "This needs the admin role in the workspace.", required_role="admin")


def lock_workspace(workspace_id: str, conn: Any = None) -> None:
    """Take the workspace row lock first in every mutating transaction.

    One lock order for every writer (workspace row, then anything inside it) is what keeps
    PostgreSQL free of deadlocks. On SQLite the transaction's BEGIN IMMEDIATE already holds the
    database's single write lock, so there is nothing more to take. Every write request runs
    this, hence plain SQL rather than an ORM query. Raises Workspace.DoesNotExist on PostgreSQL
    when there is no such row. `conn`: the transaction's connection, if the caller has it at hand.
    """
    conn = transaction.get_connection() if conn is None else conn
    if not conn.in_atomic_block:
        raise TransactionManagementError("lock_workspace() must run inside transaction.atomic()")
    if conn.vendor == "sqlite":
        return
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT 1 FROM {Workspace._meta.db_table} WHERE id = %s FOR UPDATE", [workspace_id])
        if cursor.fetchone() is None:
            raise Workspace.DoesNotExist(workspace_id)


def locked_workspace(workspace_id: str) -> Workspace:
    """lock_workspace(), returning the row as it is under the lock."""
    return Workspace.objects.select_for_update().get(pk=workspace_id)


def workspace_create(*, user: Any, name: str, intelligence: bool = True) -> Workspace:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise Invalid("invalid_name", "A workspace name is 1-200 characters.")
    with transaction.atomic():
        ws = Workspace.objects.create(id=new_id("ws"), name=name, intelligence=intelligence, created_by=user)
        Membership.objects.create(workspace=ws, user=user, role=Role.OWNER)
        event_record(workspace_id=ws.id, type="workspace.created", actor=user, target=ws.id,
                     data={"name": name, "intelligence": intelligence})
    return ws


def workspace_update(*, access: Access, name: str | None = None, intelligence: bool | None = None) -> Workspace:
    _require_admin(access)
    with transaction.atomic():
        ws = locked_workspace(access.workspace_id)
        changes: dict[str, Any] = {}
        if name is not None:
            name = name.strip()
            if not name or len(name) > 200:
                raise Invalid("invalid_name", "A workspace name is 1-200 characters.")
            changes["name"] = {"old": ws.name, "new": name}
            ws.name = name
        if intelligence is not None and intelligence != ws.intelligence:
            changes["intelligence"] = {"old": ws.intelligence, "new": intelligence}
            ws.intelligence = intelligence
        if changes:
            ws.save(update_fields=["name", "intelligence"])
            event_record(workspace_id=ws.id, type="workspace.updated", actor=access.user, target=ws.id, data=changes)
    return ws


def _user_by_name(username: str) -> Any:
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise NotFound("user", f"No user named {username!r}.")
    return user


def member_set(*, access: Access, username: str, role: str) -> Membership:
    _require_admin(access)
    if role not in {Role.ADMIN, Role.EDITOR, Role.VIEWER}:
        raise Invalid("invalid_role", "A role is one of 'admin', 'editor', 'viewer' (ownership moves by transfer).")
    target = _user_by_name(username)
    with transaction.atomic():
        lock_workspace(access.workspace_id)
        membership = Membership.objects.filter(workspace=access.workspace, user=target).first()
        old = membership.role if membership else None
        if old == Role.OWNER:
            raise Forbidden("owner_role", "The owner's role changes only by an ownership transfer.")
        if Role(role) == Role.ADMIN and not access.at_least(Role.OWNER) and old != Role.ADMIN:
            # Admins manage editors and viewers; only the owner makes admins.
            raise Forbidden("forbidden", "Only the owner may make someone an admin.")
        if old == Role.ADMIN and not access.at_least(Role.OWNER):
            raise Forbidden("forbidden", "Only the owner may change an admin's role.")
        if membership is None:
            membership = Membership.objects.create(workspace=access.workspace, user=target, role=role)
        elif old != role:
            membership.role = role
            membership.save(update_fields=["role"])
        if old != role:
            event_record(workspace_id=access.workspace_id, type="member.set", actor=access.user, target=username,
                         data={"old": old, "new": role})
    return membership


def member_remove(*, access: Access, username: str) -> None:
    _require_admin(access)
    target = _user_by_name(username)
    with transaction.atomic():
        lock_workspace(access.workspace_id)
        membership = Membership.objects.filter(workspace=access.workspace, user=target).first()
        if membership is None:
            raise NotFound("member")
        if membership.role == Role.OWNER:
            raise Forbidden("owner_role", "The owner cannot be removed; transfer ownership first.")
        if membership.role == Role.ADMIN and not access.at_least(Role.OWNER) and target.pk != access.user.pk:
            raise Forbidden("forbidden", "Only the owner may remove an admin.")
        membership.delete()
        event_record(workspace_id=access.workspace_id, type="member.removed", actor=access.user, target=username,
                     data={"old": membership.role})


def rule_set(*, access: Access, prefix: str, writers: list[str]) -> DirectoryRule:
    _require_admin(access)
    prefix = validate_prefix(prefix)
    if prefix == "":
        raise Invalid("invalid_path", "A rule needs a directory prefix such as 'research/'.")
    if not isinstance(writers, list) or not all(isinstance(w, str) for w in writers):
        raise Invalid("invalid_writers", "'writers' is a list of usernames.")
    users = []
    for name in dict.fromkeys(writers):
        user = _user_by_name(name)
        if not Membership.objects.filter(workspace=access.workspace, user=user).exists():
            raise Invalid("not_a_member", f"{name!r} is not a member of this workspace.", username=name)
        users.append(user)
    with transaction.atomic():
        lock_workspace(access.workspace_id)
        rule, created = DirectoryRule.objects.get_or_create(workspace=access.workspace, prefix=prefix)
        old = sorted(rule.writers.values_list("username", flat=True)) if not created else None
        rule.writers.set(users)
        rule.save()
        event_record(workspace_id=access.workspace_id, type="rule.set", actor=access.user, target=prefix,
                     data={"old": old, "new": sorted(u.username for u in users)})
    return rule


def rule_delete(*, access: Access, prefix: str) -> None:
    _require_admin(access)
    prefix = validate_prefix(prefix)
    with transaction.atomic():
        lock_workspace(access.workspace_id)
        rule = DirectoryRule.objects.filter(workspace=access.workspace, prefix=prefix).first()
        if rule is None:
            raise NotFound("rule")
        old = sorted(rule.writers.values_list("username", flat=True))
        rule.delete()
        event_record(workspace_id=access.workspace_id, type="rule.deleted", actor=access.user, target=prefix,
                     data={"old": old})


def rule_for_path(*, workspace_id: str, path: str) -> DirectoryRule | None:
    """The most specific rule whose prefix contains `path`."""
    candidates = [path[: i + 1] for i, ch in enumerate(path) if ch == "/"]
    if not candidates:
        return None
    return (
        DirectoryRule.objects.filter(workspace_id=workspace_id, prefix__in=candidates)
        .prefetch_related("writers")
        .order_by("-prefix")
        .first()
    )


def rule_check_write(*, workspace_id: str, path: str, user: Any) -> None:
    rule = rule_for_path(workspace_id=workspace_id, path=path)
    if rule is None:
        return
    if not any(w.pk == user.pk for w in rule.writers.all()):
        raise Forbidden(
            "not_owner",
            f"Only {', '.join(sorted(w.username for w in rule.writers.all())) or 'nobody'} may write under {rule.prefix}.",
            prefix=rule.prefix, writers=sorted(w.username for w in rule.writers.all()),
        )


LAYOUT_DIRS = ("inbox/", "output/", "failed/")


def layout_create(*, access: Access, agents: list[str]) -> dict[str, Any]:
    """The standard layout: inbox/, agent-<name>/ per agent, output/, failed/ (each with a .keep
    file so it shows in the tree), and a rule so only <name> writes agent-<name>/."""
    _require_admin(access)
    from workspace.services.files import file_write

    if not isinstance(agents, list) or not all(isinstance(a, str) for a in agents):
        raise Invalid("invalid_agents", "'agents' is a list of usernames.")
    users = [_user_by_name(name) for name in dict.fromkeys(agents)]
    created: list[str] = []
    with transaction.atomic():
        for user in users:
            if not Membership.objects.filter(workspace=access.workspace, user=user).exists():
                member_set(access=access, username=user.username, role=Role.EDITOR)
        dirs = list(LAYOUT_DIRS) + [f"agent-{u.username}/" for u in users]
        for directory in dirs:
            keep = f"{directory}.keep"
            if not access.workspace.files.filter(path=keep, deleted=False).exists():
                file_write(access=access, path=keep, content=b"", if_none_match=True)
                created.append(directory)
        rules = []
        for user in users:
            rule = rule_set(access=access, prefix=f"agent-{user.username}/", writers=[user.username])
            rules.append({"prefix": rule.prefix, "writers": [user.username]})
        event_record(workspace_id=access.workspace_id, type="layout.created", actor=access.user, target="",
                     data={"directories": dirs, "agents": [u.username for u in users]})
    return {"directories": dirs, "created": created, "rules": rules}
