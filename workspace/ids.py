"""Opaque ids: a short type prefix and 80 random bits in lowercase base32 (`ws_3k9…`)."""
from __future__ import annotations

import secrets

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lowercase
# Every pair of base32 digits (10 bits), so 80 bits are 8 lookups: `base64.b32encode` is written
# in Python and took twice as long, and every lock grant, task and message takes an id.
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]


def new_id(prefix: str) -> str:
    n = int.from_bytes(secrets.token_bytes(10))
    pairs = _PAIRS
    return (f"{prefix}_{pairs[n >> 70]}{pairs[(n >> 60) & 1023]}{pairs[(n >> 50) & 1023]}{pairs[(n >> 40) & 1023]}"
            f"{pairs[(n >> 30) & 1023]}{pairs[(n >> 20) & 1023]}{pairs[(n >> 10) & 1023]}{pairs[n & 1023]}")
