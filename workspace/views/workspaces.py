"""The workspace list, creating a workspace, members and directory rules, and ownership offers."""
from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from workspace.api.transfers import accept_path
from workspace.errors import ServiceError
from workspace.models import Membership, Role
from workspace.selectors import members, offers_for, rules, transfers
from workspace.services import transfers as transfer_svc
from workspace.services import workspaces as ws_svc
from workspace.views.common import act, back, page_access, workspace_page
from workspace.views.present import Urls


@login_required
@require_http_methods(["GET", "POST"])
def workspace_list(request: HttpRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        try:
            ws = ws_svc.workspace_create(user=request.user, name=request.POST.get("name", ""),
                                         intelligence=request.POST.get("intelligence") == "on")
        except ServiceError as exc:
            error = exc.message
        else:
            messages.success(request, f"Created {ws.name}.")
            return redirect("workspace", ws=ws.id)
    memberships = (Membership.objects.filter(user=request.user)
                   .select_related("workspace", "workspace__transferred_from").order_by("workspace__name"))
    return render(request, "workspace/list.html", {
        "memberships": memberships, "error": error, "offers": offers_for(user=request.user),
        "name": request.POST.get("name", "") if error else "",
    }, status=400 if error else 200)


@login_required
@require_POST
def offer_respond(request: HttpRequest, transfer_id: str) -> HttpResponse:
    """Accept or decline an ownership offer made to one's own account, from the workspace list.
    (An offer to an email address is accepted through its link, on the accept page.)"""
    action = request.POST.get("action")
    if action == "accept":
        transfer = act(request, lambda: transfer_svc.transfer_accept(user=request.user, transfer_id=transfer_id),
                       done=lambda t: f"You now own {t.workspace.name}.")
        if transfer:
            return redirect("workspace", ws=transfer.workspace_id)
    elif action == "decline":
        act(request, lambda: transfer_svc.transfer_cancel(user=request.user, transfer_id=transfer_id),
            done="You declined the offer.")
    else:
        messages.error(request, "Choose to accept or decline the offer.")
    return redirect("home")


# -- members, rules, transfer ------------------------------------------------------------------------
def _members_context(access: Any) -> dict[str, Any]:
    ws_id = access.workspace_id
    ws = access.workspace
    return {
        "urls": Urls(ws_id), "members": members(workspace_id=ws_id), "rules": rules(workspace_id=ws_id),
        "transfers": transfers(workspace_id=ws_id) if access.at_least(Role.ADMIN) else [],
        "is_owner": access.role == Role.OWNER, "roles": [Role.ADMIN, Role.EDITOR, Role.VIEWER],
        "transferred_from": ws.transferred_from.username if ws.transferred_from_id else "",
    }


@login_required
@require_http_methods(["GET"])
def members_page(request: HttpRequest, ws: str) -> HttpResponse:
    access = page_access(request, ws)
    return workspace_page(request, access, "workspace/members.html", _members_context(access), tab="members",
                          fragments={"members": "workspace/_members.html"})


ADMIN_ACTIONS = frozenset({"member_set", "member_remove", "rule_set", "rule_delete", "layout"})


def _writers(raw: str) -> list[str]:
    return [name for name in (part.strip() for part in raw.replace("\n", ",").split(",")) if name]


@login_required
@require_POST
def members_action(request: HttpRequest, ws: str) -> HttpResponse:
    """The forms of the members page, gated as their API counterparts are: members, rules and the
    layout need an admin; withdrawing an offer is checked by its service."""
    post = request.POST
    action = post.get("action", "")
    access = page_access(request, ws)
    if action in ADMIN_ACTIONS and not access.at_least(Role.ADMIN):
        messages.error(request, f"This needs the admin role in the workspace; you are {access.role.value}.")
        return back(request, reverse("ws-members", kwargs={"ws": access.workspace_id}))
    if action == "member_set":
        username = post.get("username", "").strip()
        act(request, lambda: ws_svc.member_set(access=access, username=username, role=post.get("role", "")),
            done=lambda m: f"{m.user.username} is now {m.role}.")
    elif action == "member_remove":
        username = post.get("username", "").strip()
        act(request, lambda: ws_svc.member_remove(access=access, username=username),
            done=f"Removed {username}.")
    elif action == "rule_set":
        act(request, lambda: ws_svc.rule_set(access=access, prefix=post.get("prefix", "").strip(),
                                             writers=_writers(post.get("writers", ""))),
            done=lambda r: f"Only the listed writers may now write under {r.prefix}.")
    elif action == "rule_delete":
        prefix = post.get("prefix", "")
        act(request, lambda: ws_svc.rule_delete(access=access, prefix=prefix), done=f"Removed the rule on {prefix}.")
    elif action == "layout":
        act(request, lambda: ws_svc.layout_create(access=access, agents=_writers(post.get("agents", ""))),
            done=lambda r: f"Created the standard layout: {', '.join(r['directories'])}.")
    elif action == "transfer_cancel":
        act(request, lambda: transfer_svc.transfer_cancel(user=request.user, transfer_id=post.get("transfer", "")),
            done="The offer was withdrawn.")
    else:
        messages.error(request, "Unknown action.")
    return back(request, reverse("ws-members", kwargs={"ws": access.workspace_id}))


@login_required
@require_POST
def transfer_offer_view(request: HttpRequest, ws: str) -> HttpResponse:
    """Offer the workspace (owner only). The accept link carries a one-time token, so it is shown
    on this response only, never stored."""
    access = page_access(request, ws)
    try:
        offer = transfer_svc.transfer_offer(access=access, to=request.POST.get("to", ""),
                                            message=request.POST.get("message", ""))
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("ws-members", ws=access.workspace_id)
    link = request.build_absolute_uri(accept_path(offer.transfer.pk, offer.token))
    context = {**_members_context(access), "offer": offer.transfer, "accept_link": link}
    response = workspace_page(request, access, "workspace/transfer_offered.html", context, tab="members",
                              status=201)
    response["Cache-Control"] = "no-store"
    return response
