"""Opaque ids keep their format: a prefix, then 80 random bits as 16 lowercase base32 digits."""
from __future__ import annotations

import base64
import os

import pytest

from workspace import ids


def test_an_id_is_its_random_bits_in_lowercase_base32(monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN the random bytes an id is made of WHEN it is made THEN it reads as RFC 4648 base32 of
    exactly those bytes, lowercase, after the prefix (for edge values and random ones alike)."""
    samples = [bytes(10), b"\xff" * 10, bytes(range(10)), *(os.urandom(10) for _ in range(500))]
    for raw in samples:
        monkeypatch.setattr(ids.secrets, "token_bytes", lambda n, raw=raw: raw[:n])
        assert ids.new_id("lk") == "lk_" + base64.b32encode(raw).decode("ascii").lower()


def test_ids_do_not_repeat() -> None:
    made = {ids.new_id("ws") for _ in range(10_000)}
    assert len(made) == 10_000 and all(len(i) == 19 and i.startswith("ws_") for i in made)
