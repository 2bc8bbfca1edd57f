"""Shared OpenAPI pieces: the error body and common responses."""
from __future__ import annotations

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import serializers


class AutoSchema(SpectacularAutoSchema):
    """Component names from the serializer's qualified name: the `InputSerializer` nested in
    `TokensView` and the one nested in `MovesView` are two components (`TokensViewInput`,
    `MovesViewInput`), not one name for both, which would give most operations the wrong body."""

    def get_serializer_name(self, serializer: serializers.Serializer, direction: str) -> str:
        qualname = type(serializer).__qualname__
        return "".join(part for part in qualname.split(".") if part != "<locals>")


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorSerializer, description="Error body") for code in codes}


def page_of(name: str, item: serializers.Serializer) -> serializers.Serializer:
    return inline_serializer(name=name, fields={
        "results": serializers.ListField(child=item),
        "next": serializers.CharField(allow_null=True),
    })
