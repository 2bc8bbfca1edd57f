"""State changes for accounts and tokens."""
from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from agents import tokens
from agents.models import ApiToken, User
from workspace.errors import Conflict, Invalid, NotFound
from workspace.ids import new_id


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str


USERNAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _check_username(name: str) -> str:
    import re

    name = (name or "").strip()
    if not re.match(USERNAME_RE, name):
        raise Invalid(
            "invalid_username",
            "A name is 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    return name


def token_issue(*, user: User, name: str = "") -> IssuedToken:
    secret = tokens.new_secret()
    token = ApiToken.objects.create(
        id=new_id("tok"), user=user, name=name[:100], prefix=secret[:12], digest=tokens.digest(secret)
    )
    return IssuedToken(token=token, secret=secret)


def token_revoke(*, user: User, token_id: str) -> ApiToken:
    with transaction.atomic():
        token = ApiToken.objects.select_for_update().filter(id=token_id, user=user).first()
        if token is None:
            raise NotFound("token")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
    return token


def agent_create(*, name: str, created_by: User | None) -> IssuedToken:
    """An agent account and its first token. `created_by` is the human it acts for."""
    name = _check_username(name)
    try:
        with transaction.atomic():
            agent = User(username=name, kind=User.Kind.AGENT, created_by=created_by)
            agent.set_unusable_password()
            agent.save()
            return token_issue(user=agent, name="initial")
    except IntegrityError as exc:
        raise Conflict("name_taken", f"The name {name!r} is already taken.") from exc


def user_create(*, username: str, email: str = "", password: str | None = None,
                is_staff: bool = False, is_superuser: bool = False) -> User:
    username = _check_username(username)
    try:
        with transaction.atomic():
            user = User(username=username, email=email, kind=User.Kind.HUMAN,
                        is_staff=is_staff, is_superuser=is_superuser)
            if password:
                user.set_password(password)
            else:
                user.set_unusable_password()
            user.save()
            return user
    except IntegrityError as exc:
        raise Conflict("name_taken", f"The name {username!r} is already taken.") from exc


def random_password() -> str:
    return secrets.token_urlsafe(12)
