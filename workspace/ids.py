"""Opaque ids: a short type prefix and 80 random bits in lowercase base32 (`ws_3k9…`)."""
from __future__ import annotations

import base64
import secrets


def new_id(prefix: str) -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()
    return f"{prefix}_{raw}"
