"""Serializer fields stricter than DRF's defaults."""
from __future__ import annotations

from typing import Any

from rest_framework import serializers

from workspace.api.fast_input import plain


@plain
class StrictCharField(serializers.CharField):
    """A string, and only a string: DRF's CharField would turn 7 into "7" (a path named "7")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
