"""DRF authentication: bearer tokens for agents and scripts, sessions (with CSRF) for browsers."""
from __future__ import annotations

import hmac

from django.db import connections, router
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from agents import tokens
from agents.models import ApiToken, User
from switchyard.db.rows import Columns

# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
_LAST_USED_RESOLUTION_SECONDS = 60


_TOKEN, _USER, _CREATOR = Columns(ApiToken, "t"), Columns(User, "u"), Columns(User, "c")
# Every API request runs this lookup: one plain statement instead of an ORM query built and
# compiled each time (that was a third of an authenticated no-op request).
_TOKEN_SQL = (
    f"SELECT {_TOKEN.sql}, {_USER.sql}, {_CREATOR.sql} FROM {ApiToken._meta.db_table} t"  # noqa: S608
    f" JOIN {User._meta.db_table} u ON u.id = t.user_id LEFT JOIN {User._meta.db_table} c ON c.id = u.created_by_id"
    " WHERE t.digest = %s AND t.revoked_at IS NULL"
)


def _token_by_digest(digest: str) -> ApiToken | None:
    """The unrevoked token with this digest, its user and the user's creator loaded with it."""
    connection = connections[router.db_for_read(ApiToken)]
    with connection.cursor() as cursor:
        cursor.execute(_TOKEN_SQL, [digest])
        row = cursor.fetchone()
    if row is None:
        return None
    split, creator_at = len(_TOKEN), len(_TOKEN) + len(_USER)
    token = _TOKEN.instance(connection, row[:split])
    user = _USER.instance(connection, row[split:creator_at])
    user.created_by = _CREATOR.instance(connection, row[creator_at:]) if user.created_by_id is not None else None
    token.user = user
    return token


def user_for_token(secret: str) -> User | None:
    """The active user a bearer secret belongs to, or None. Shared by HTTP, WebSocket and MCP."""
    if not secret or len(secret) > 200:
        return None
    wanted = tokens.digest(secret)
    token = _token_by_digest(wanted)
    # The lookup is by digest (an index), so timing does not leak the secret; compare anyway.
    if token is None or not hmac.compare_digest(token.digest, wanted) or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > _LAST_USED_RESOLUTION_SECONDS:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def bearer_from_header(value: str | bytes | None) -> str | None:
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    scheme, _, credential = value.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        secret = bearer_from_header(header)
        if secret is None:
            raise exceptions.AuthenticationFailed("Use 'Authorization: Bearer <token>'.")
        user = user_for_token(secret)
        if user is None:
            _count_failure(request)
            raise exceptions.AuthenticationFailed("The token is not valid or has been revoked.")
        return (user, None)

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="switchyard"'


def _count_failure(request: Request) -> None:
    from workspace.ratelimit import auth_failure_record

    auth_failure_record(request)


class CsrfSessionAuthentication(authentication.SessionAuthentication):
    """Session auth for the browser; CSRF is enforced on unsafe methods (DRF's default behaviour)."""
