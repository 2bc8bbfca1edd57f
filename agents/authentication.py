"""DRF authentication: bearer tokens for agents and scripts, sessions (with CSRF) for browsers."""
from __future__ import annotations

import hmac

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from agents import tokens
from agents.models import ApiToken, User

# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
_LAST_USED_RESOLUTION_SECONDS = 60


def user_for_token(secret: str) -> User | None:
    """The active user a bearer secret belongs to, or None. Shared by HTTP, WebSocket and MCP."""
    if not secret or len(secret) > 200:
        return None
    wanted = tokens.digest(secret)
    token = (
        ApiToken.objects.select_related("user", "user__created_by")
        .filter(digest=wanted, revoked_at__isnull=True)
        .first()
    )
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
