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
from workspace.access import membership_prefetched, membership_select

# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
_LAST_USED_RESOLUTION_SECONDS = 60


_TOKEN, _USER, _CREATOR = Columns(ApiToken, "t"), Columns(User, "u"), Columns(User, "c")
# Every API request runs this lookup: one plain statement instead of an ORM query built and
# compiled each time (that was a third of an authenticated no-op request).
_TOKEN_SELECT = f"SELECT {_TOKEN.sql}, {_USER.sql}, {_CREATOR.sql}"
_TOKEN_FROM = (f" FROM {ApiToken._meta.db_table} t JOIN {User._meta.db_table} u ON u.id = t.user_id"
               f" LEFT JOIN {User._meta.db_table} c ON c.id = u.created_by_id")
_TOKEN_WHERE = " WHERE t.digest = %s AND t.revoked_at IS NULL"
_TOKEN_SQL = _TOKEN_SELECT + _TOKEN_FROM + _TOKEN_WHERE
# A request whose URL names a workspace also reads the user's membership in it (workspace.access).
_MEMBER_COLUMNS, _MEMBER_JOINS, _MEMBER_WIDTH = membership_select("u")
_TOKEN_MEMBER_SQL = f"{_TOKEN_SELECT}, {_MEMBER_COLUMNS}{_TOKEN_FROM}{_MEMBER_JOINS}{_TOKEN_WHERE}"


def _token_by_digest(digest: str, *, workspace_id: str | None = None) -> ApiToken | None:
    """The unrevoked token with this digest, its user and the user's creator loaded with it; with
    `workspace_id`, the user's membership in that workspace too (see `membership_prefetched`)."""
    connection = connections[router.db_for_read(ApiToken)]
    with connection.cursor() as cursor:
        if workspace_id is None:
            cursor.execute(_TOKEN_SQL, [digest])
        else:
            cursor.execute(_TOKEN_MEMBER_SQL, [workspace_id, digest])
        row = cursor.fetchone()
    if row is None:
        return None
    split, creator_at = len(_TOKEN), len(_TOKEN) + len(_USER)
    member_at = creator_at + len(_CREATOR)
    token = _TOKEN.instance(connection, row[:split])
    user = _USER.instance(connection, row[split:creator_at])
    user.created_by = _CREATOR.instance(connection, row[creator_at:member_at]) \
        if user.created_by_id is not None else None
    if workspace_id is not None:
        membership_prefetched(user, workspace_id, connection, row[member_at:member_at + _MEMBER_WIDTH])
    token.user = user
    return token


def user_for_token(secret: str, *, workspace_id: str | None = None) -> User | None:
    """The active user a bearer secret belongs to, or None. Shared by HTTP, WebSocket and MCP.
    `workspace_id`: the workspace the request names, whose membership is read along (HTTP API)."""
    if not secret or len(secret) > 200:
        return None
    wanted = tokens.digest(secret)
    token = _token_by_digest(wanted, workspace_id=workspace_id)
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
        # The API's workspace URLs name the workspace `ws`: its membership is read with the token.
        match = getattr(request._request, "resolver_match", None)
        ws = match.kwargs.get("ws") if match is not None else None
        user = user_for_token(secret, workspace_id=ws if isinstance(ws, str) else None)
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
