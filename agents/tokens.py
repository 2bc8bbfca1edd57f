"""Token secrets: generation and hashing. Tokens carry 256 bits of randomness, so a fast hash
(SHA-256) is the right tool: a slow password hash would buy nothing and cost every request."""
from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "syd_"


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
