"""The fast path through input validation (workspace/api/fast_input.py) gives exactly what the
DRF serializer gives, or steps aside: checked on generated bodies for every input serializer
of the API, and end to end on the lock endpoints."""
from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from workspace.api import fast_input
from workspace.api.base import ApiView
from workspace.api.locks import LockBatchView, LocksView


def _input_serializers() -> list[type[serializers.Serializer]]:
    """Every serializer class declared on an API view (the bodies `ApiView.data` validates)."""
    import workspace.api.urls  # noqa: F401  (imports every API module, so every view is defined)

    found: dict[str, type[serializers.Serializer]] = {}
    views = [ApiView]
    while views:
        view = views.pop()
        views.extend(view.__subclasses__())
        for value in vars(view).values():
            if isinstance(value, type) and issubclass(value, serializers.Serializer):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[name] for name in sorted(found)]


SERIALIZERS = _input_serializers()
WITH_PLAN = [cls for cls in SERIALIZERS if fast_input.plan_for(cls) is not None]

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=-5, max_value=400),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-5, max_value=400),
    st.text(max_size=12), st.sampled_from(["", " ", " a ", "a\x00b", "\ud800", "60", "1.5", "true", "x" * 5000,
                                           "viewer", "editor", "admin", "owner", "notes/a.md", "dir/"]),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=4), st.dictionaries(st.text(max_size=3), _scalars, max_size=2))


def _near(field: serializers.Field) -> st.SearchStrategy[Any]:
    """Values of the type `field` wants, around its limits (so that many bodies are valid)."""
    low = high = None
    for validator in field.validators:
        low = getattr(validator, "limit_value", low) if type(validator).__name__ == "MinValueValidator" else low
        high = getattr(validator, "limit_value", high) if type(validator).__name__ == "MaxValueValidator" else high
    if isinstance(field, serializers.ListField):
        return st.lists(_near(field.child), max_size=4)
    if isinstance(field, serializers.ChoiceField):
        return st.sampled_from(sorted(field.choice_strings_to_values))
    if isinstance(field, serializers.BooleanField):
        return st.booleans()
    if isinstance(field, serializers.IntegerField):
        return st.integers(min_value=(low if low is not None else -50) - 2, max_value=(high if high is not None else 500) + 2)
    if isinstance(field, serializers.FloatField):
        return st.floats(min_value=(low if low is not None else -50) - 1, max_value=(high if high is not None else 500) + 1)
    return st.one_of(st.text(max_size=20), st.sampled_from(["notes/a.md", "dir/", " padded ", "x" * 300]))


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (60 == 60.0 == True would pass `==`)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def test_the_lock_and_other_plain_input_serializers_have_a_fast_plan():
    assert fast_input.plan_for(LocksView.InputSerializer) is not None
    assert fast_input.plan_for(LockBatchView.InputSerializer) is not None
    assert len(WITH_PLAN) >= 5, [cls.__qualname__ for cls in WITH_PLAN]


@pytest.mark.parametrize("serializer_class", WITH_PLAN, ids=lambda cls: cls.__qualname__)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_path_agrees_with_the_serializer_or_steps_aside(serializer_class, data):
    body = {}
    for name, field in serializer_class().fields.items():
        if data.draw(st.integers(0, 9)) < (9 if field.required else 6):
            body[name] = data.draw(st.one_of(_near(field), _near(field), _values))
    if data.draw(st.booleans()):
        body["unknown"] = data.draw(_values)
    fast = fast_input.parse(serializer_class, body)
    serializer = serializer_class(data=body)
    valid = serializer.is_valid()
    if fast is not None:
        assert valid, (body, serializer.errors)
        assert _same(fast, dict(serializer.validated_data)), (body, fast, dict(serializer.validated_data))


@pytest.mark.parametrize("body, expected", [
    ({"path": "notes/a.md"}, {"path": "notes/a.md", "ttl_seconds": 60, "reason": "", "wait_seconds": 0}),
    ({"path": "dir/", "ttl_seconds": 300, "reason": " why ", "wait_seconds": 2.5, "extra": [1]},
     {"path": "dir/", "ttl_seconds": 300, "reason": "why", "wait_seconds": 2.5}),
    ({"path": "a", "wait_seconds": 3}, {"path": "a", "ttl_seconds": 60, "reason": "", "wait_seconds": 3.0}),
])
def test_well_formed_lock_requests_take_the_fast_path(body, expected):
    fast = fast_input.parse(LocksView.InputSerializer, body)
    assert _same(fast, expected)
    assert _same(fast, dict(_validated(LocksView.InputSerializer, body)))


@pytest.mark.parametrize("body", [
    {},  # path is required
    {"path": "a", "ttl_seconds": "60"},  # DRF would take the string; the fast path leaves it to DRF
    {"path": "a", "ttl_seconds": 301},
    {"path": "a", "ttl_seconds": True},
    {"path": "a", "wait_seconds": float("inf")},
    {"path": "a", "reason": None},
    {"path": "a\x00b"},
    {"path": ""},
])
def test_anything_else_is_left_to_the_serializer(body):
    assert fast_input.parse(LocksView.InputSerializer, body) is None


def _validated(serializer_class: type[serializers.Serializer], body: dict[str, Any]) -> dict[str, Any]:
    serializer = serializer_class(data=body)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def test_serializers_with_their_own_validation_get_no_plan():
    class WithValidate(serializers.Serializer):
        name = serializers.CharField()

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            return attrs

    class WithFieldValidator(serializers.Serializer):
        name = serializers.CharField()

        def validate_name(self, value: str) -> str:
            return value.upper()

    class Transforming(serializers.CharField):
        def to_internal_value(self, data: Any) -> str:
            return str(super().to_internal_value(data)).upper()

    class WithUnknownField(serializers.Serializer):
        name = Transforming()

    class Nested(serializers.Serializer):
        inner = WithUnknownField()

    for cls in (WithValidate, WithFieldValidator, WithUnknownField, Nested):
        assert fast_input.plan_for(cls) is None, cls.__name__
        assert fast_input.parse(cls, {"name": "x", "inner": {"name": "x"}}) is None


@pytest.mark.django_db
def test_bad_lock_bodies_get_the_serializers_errors_over_http(make_user):
    from rest_framework.test import APIClient

    from workspace.services.workspaces import workspace_create

    owner = make_user("fiona")
    ws = workspace_create(user=owner.user, name="fast", intelligence=False)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.token}")
    url = f"/api/v1/workspaces/{ws.id}/locks"
    missing = client.post(url, {"ttl_seconds": 60}, format="json")
    assert missing.status_code == 400
    assert "path" in str(missing.json()["error"])
    too_long = client.post(url, {"path": "a.txt", "ttl_seconds": 301}, format="json")
    assert too_long.status_code == 400
    assert "ttl_seconds" in str(too_long.json()["error"])
    granted = client.post(url, {"path": "a.txt", "ttl_seconds": 30, "reason": "  fix  "}, format="json")
    assert granted.status_code == 201, granted.content
    assert granted.json()["ttl_seconds"] == 30
    assert granted.json()["reason"] == "fix"
