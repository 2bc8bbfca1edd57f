"""Ownership transfers: the owner offers the workspace to an account or an email address; the
recipient accepts with the offer's one-time token and becomes owner, the previous owner admin.

Only the sha256 of the token is stored. An offer is pending until it is accepted, cancelled
(by its sender, the owner, or the recipient declining) or expires (settings.TRANSFER_TTL_DAYS,
on the database clock; the `transfers.expiry` sweep records the expiry). To anyone else it
does not exist (404).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from workspace.access import Access
from workspace.errors import Conflict, Forbidden, Gone, Invalid, NotFound
from workspace.ids import new_id
from workspace.models import Membership, Role
from workspace.models.tasks import Transfer, TransferStatus
from workspace.services.events import event_record
from workspace.services.tasks import clean_text, db_now, iso
from workspace.services.workspaces import lock_workspace, locked_workspace

MAX_MESSAGE = 5000


@dataclass(frozen=True)
class Offer:
    transfer: Transfer
    token: str  # shown once, in the accept link


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _resolve_recipient(to: str) -> tuple[Any, str]:
    """(account, email) for `to`: a username names an account; an email names the one active
    account with that address, or, when there is none (or several), whoever signs up with it."""
    users = get_user_model().objects.filter(is_active=True)
    if "@" in to:
        try:
            validate_email(to)
        except ValidationError as exc:
            raise Invalid("invalid_field", f"{to!r} is not an email address.", field="to") from exc
        matches = list(users.filter(email__iexact=to)[:2])
        return (matches[0] if len(matches) == 1 else None), to
    user = users.filter(username=to).first()
    if user is None:
        raise Invalid("unknown_user", f"No account is named {to!r}; offer it to an email address instead.",
                      field="to")
    return user, ""


def transfer_offer(*, access: Access, to: str, message: str = "") -> Offer:
    if access.role != Role.OWNER:
        raise Forbidden("owner_only", "Only the owner may transfer the workspace.", required_role="owner",
                        role=access.role.value)
    to = clean_text(to, "to", max_length=254).strip()
    message = clean_text(message, "message", max_length=MAX_MESSAGE, allow_empty=True)
    recipient, email = _resolve_recipient(to)
    if recipient is not None and recipient.pk == access.user.pk:
        raise Invalid("self_transfer", "You already own this workspace.", field="to")
    ws_id = access.workspace_id
    token = secrets.token_urlsafe(32)
    with transaction.atomic():
        lock_workspace(ws_id)
        now = db_now()
        for stale in Transfer.objects.select_for_update().filter(workspace_id=ws_id, status=TransferStatus.PENDING,
                                                                   expires_at__lte=now):
            _expire(stale, now)
        pending = Transfer.objects.filter(workspace_id=ws_id, status=TransferStatus.PENDING).first()
        if pending is not None:
            raise Conflict("transfer_pending", "An offer for this workspace is already pending; cancel it first.",
                           transfer=pending.pk)
        try:
            with transaction.atomic():
                transfer = Transfer.objects.create(
                    id=new_id("tr"), workspace_id=ws_id, from_user=access.user, to=to, to_user=recipient,
                    to_email=email, message=message, token_digest=token_digest(token), created_at=now,
                    expires_at=now + timedelta(days=settings.TRANSFER_TTL_DAYS))
        except IntegrityError as exc:  # the one-pending constraint: unreachable under the workspace lock
            raise Conflict("transfer_pending", "An offer for this workspace is already pending.") from exc
        event_record(workspace_id=ws_id, type="transfer.offered", actor=access.user, target=transfer.pk, data={
            "transfer": transfer.pk, "to": to, "to_user": recipient.username if recipient else None,
            "expires_at": iso(transfer.expires_at)})
    return Offer(transfer=transfer, token=token)


def is_recipient(transfer: Transfer, user: Any) -> bool:
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if transfer.to_user_id is not None:
        return bool(transfer.to_user_id == user.pk)
    return bool(transfer.to_email) and (user.email or "").lower() == transfer.to_email.lower()


def _is_sender_side(transfer: Transfer, user: Any) -> bool:
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if transfer.from_user_id == user.pk:
        return True
    return Membership.objects.filter(workspace_id=transfer.workspace_id, user_id=user.pk,
                                     role__in=[Role.OWNER, Role.ADMIN]).exists()


def transfer_for(*, user: Any, transfer_id: Any) -> Transfer:
    """A transfer as its sender, the workspace's owner or admins, or its recipient see it; 404 to anyone else."""
    transfer = _find(transfer_id)
    if not (is_recipient(transfer, user) or _is_sender_side(transfer, user)):
        raise NotFound("transfer")
    return transfer


def transfer_by_token(*, transfer_id: Any, token: Any) -> Transfer:
    """The transfer a link names, for a visitor who holds its token (the sign-up page)."""
    transfer = _find(transfer_id)
    if not isinstance(token, str) or not hmac.compare_digest(token_digest(token), transfer.token_digest):
        raise NotFound("transfer")
    return transfer


def _find(transfer_id: Any) -> Transfer:
    if not isinstance(transfer_id, str) or not transfer_id or len(transfer_id) > 32:
        raise NotFound("transfer")
    transfer = Transfer.objects.select_related("workspace", "from_user", "to_user").filter(pk=transfer_id).first()
    if transfer is None:
        raise NotFound("transfer")
    return transfer


def _expire(transfer: Transfer, now: Any) -> None:
    Transfer.objects.filter(pk=transfer.pk, status=TransferStatus.PENDING).update(
        status=TransferStatus.EXPIRED, finished_at=now)
    transfer.status = TransferStatus.EXPIRED
    transfer.finished_at = now
    event_record(workspace_id=transfer.workspace_id, type="transfer.expired", target=transfer.pk,
                 data={"transfer": transfer.pk, "to": transfer.to, "expires_at": iso(transfer.expires_at)})


def _expire_if_due(transfer_id: str, workspace_id: str) -> bool:
    with transaction.atomic():
        lock_workspace(workspace_id)
        now = db_now()
        transfer = Transfer.objects.select_for_update().filter(
            pk=transfer_id, status=TransferStatus.PENDING, expires_at__lte=now).first()
        if transfer is None:
            return False
        _expire(transfer, now)
        return True


def _refuse_unless_pending(transfer: Transfer) -> None:
    if transfer.status == TransferStatus.ACCEPTED:
        raise Conflict("already_accepted", "This offer has already been accepted.", status=transfer.status)
    if transfer.status == TransferStatus.CANCELLED:
        raise Gone("transfer_cancelled", "This offer was cancelled.", status=transfer.status)
    if transfer.status == TransferStatus.EXPIRED:
        raise Gone("transfer_expired", "This offer has expired; ask the owner for a new one.", status=transfer.status)


def transfer_accept(*, user: Any, transfer_id: str, token: str | None = None) -> Transfer:
    """The recipient takes ownership. An offer made to an account may be accepted by that account
    alone; an offer made to an email address (no account yet) needs the link's token."""
    transfer = _find(transfer_id)
    if not is_recipient(transfer, user):
        raise NotFound("transfer")
    if transfer.from_user_id == user.pk:
        raise Invalid("self_transfer", "You cannot accept your own offer.")
    if token is not None and not (isinstance(token, str)
                                  and hmac.compare_digest(token_digest(token), transfer.token_digest)):
        raise NotFound("transfer")
    if token is None and transfer.to_user_id is None:
        raise Invalid("token_required", "Accepting an offer made to an email address needs the token from its link.",
                      field="token")
    _refuse_unless_pending(transfer)
    if _expire_if_due(transfer.pk, transfer.workspace_id):
        raise Gone("transfer_expired", "This offer has expired; ask the owner for a new one.", status="expired")
    ws_id = transfer.workspace_id
    with transaction.atomic():
        ws = locked_workspace(ws_id)
        transfer = Transfer.objects.select_for_update().get(pk=transfer.pk)
        _refuse_unless_pending(transfer)
        now = db_now()
        if transfer.expires_at <= now:
            raise Gone("transfer_expired", "This offer has expired; ask the owner for a new one.", status="expired")
        owner = Membership.objects.select_for_update().filter(workspace_id=ws_id, role=Role.OWNER).first()
        if owner is None or owner.user_id != transfer.from_user_id:
            raise Conflict("offer_outdated", "The workspace changed hands since this offer was made.")
        mine = Membership.objects.select_for_update().filter(workspace_id=ws_id, user_id=user.pk).first()
        old_role = mine.role if mine else None
        owner.role = Role.ADMIN
        owner.save(update_fields=["role"])
        if mine is None:
            Membership.objects.create(workspace_id=ws_id, user=user, role=Role.OWNER)
        else:
            mine.role = Role.OWNER
            mine.save(update_fields=["role"])
        ws.transferred_from_id = transfer.from_user_id
        ws.transferred_at = now
        ws.save(update_fields=["transferred_from", "transferred_at"])
        transfer.status = TransferStatus.ACCEPTED
        transfer.finished_at = now
        transfer.finished_by = user
        transfer.save(update_fields=["status", "finished_at", "finished_by"])
        event_record(workspace_id=ws_id, type="transfer.accepted", actor=user, target=transfer.pk,
                     data={"transfer": transfer.pk, "to": user.username})
        event_record(workspace_id=ws_id, type="workspace.transferred", actor=user, target=ws_id, data={
            "transfer": transfer.pk, "from": transfer.from_user.username, "to": user.username,
            "roles": {transfer.from_user.username: {"old": Role.OWNER, "new": Role.ADMIN},
                      user.username: {"old": old_role, "new": Role.OWNER}}})
    return transfer


def transfer_cancel(*, user: Any, transfer_id: str) -> Transfer:
    """Withdraw a pending offer (its sender, the owner or an admin), or decline it (its recipient)."""
    transfer = transfer_for(user=user, transfer_id=transfer_id)
    sender = transfer.from_user_id == user.pk or Membership.objects.filter(
        workspace_id=transfer.workspace_id, user_id=user.pk, role=Role.OWNER).exists()
    declined = not sender and is_recipient(transfer, user)
    if not sender and not declined:
        raise Forbidden("owner_only", "Only the owner (or the recipient, declining) may cancel an offer.")
    _refuse_unless_pending(transfer)
    if _expire_if_due(transfer.pk, transfer.workspace_id):
        raise Gone("transfer_expired", "This offer has already expired.", status="expired")
    with transaction.atomic():
        lock_workspace(transfer.workspace_id)
        transfer = Transfer.objects.select_for_update(of=("self",)).select_related("from_user").get(
            pk=transfer.pk)
        _refuse_unless_pending(transfer)
        now = db_now()
        transfer.status = TransferStatus.CANCELLED
        transfer.finished_at = now
        transfer.finished_by = user
        transfer.save(update_fields=["status", "finished_at", "finished_by"])
        event_record(workspace_id=transfer.workspace_id, type="transfer.cancelled", actor=user, target=transfer.pk,
                     data={"transfer": transfer.pk, "to": transfer.to, "declined": declined})
    return transfer


def transfers_expire() -> int:
    """The `transfers.expiry` sweep: record the expiry of every pending offer past its time."""
    due = list(Transfer.objects.filter(status=TransferStatus.PENDING, expires_at__lte=db_now())
               .values_list("id", "workspace_id")[:200])
    return sum(_expire_if_due(transfer_id, ws_id) for transfer_id, ws_id in due)
