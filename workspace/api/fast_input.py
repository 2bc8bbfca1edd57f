"""A fast path through DRF input validation for well-formed JSON bodies.

`ApiView.data` validates every request body with a DRF serializer. For a lock request's four
plain fields that took about 190 µs, as long as the rest of the lock work in the view: each
serializer instance deep-copies its declared fields, then runs every field's validators.

`parse(serializer_class, body)` returns what `serializer.validated_data` would be, without a
serializer instance, when it is sure of the answer: the serializer is made only of plain fields
(strings, whole numbers, numbers, booleans, choices and lists of these, with DRF's own length,
range, NUL and surrogate checks) and every value in the body is of the exact JSON type the field
wants, within its limits. Anything else (a missing required field, "60" for a number, a value
out of range, a nested serializer, a `validate` method) gets None, and the view runs the
serializer, which also writes the error. So the fast path changes no result and no error; the
tests compare the two on generated bodies.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any

from django.core.validators import (
    MaxLengthValidator,
    MaxValueValidator,
    MinLengthValidator,
    MinValueValidator,
    ProhibitNullCharactersValidator,
)
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.validators import ProhibitSurrogateCharactersValidator

# A checker takes a value and returns (True, the validated value) or (False, None) to say "ask
# the serializer".
Checker = Callable[[Any], tuple[bool, Any]]
_NO: tuple[bool, Any] = (False, None)
_SURROGATE = re.compile("[\ud800-\udfff]")
_KNOWN_VALIDATORS = (MaxLengthValidator, MinLengthValidator, MaxValueValidator, MinValueValidator,
                     ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)
# Larger whole numbers are left to DRF (str() of a huge int may raise; float() may overflow).
_INT_LIMIT = 2**63

# Field classes that, given a value of the JSON type they want, validate exactly as the DRF class
# they derive from (they may refuse other types earlier). A subclass is not assumed to: one that
# transformed the value would be skipped, not mirrored.
_PLAIN: set[type] = {serializers.CharField, serializers.IntegerField, serializers.FloatField,
                     serializers.BooleanField, serializers.ChoiceField, serializers.ListField}


def plain(cls: type[serializers.Field]) -> type[serializers.Field]:
    """Declare a field subclass plain (see `_PLAIN`); a class decorator."""
    _PLAIN.add(cls)
    return cls


def _bounds(field: serializers.Field) -> tuple[Any, Any, Any, Any]:
    """(min value, max value, min length, max length) from the field's validators; None if absent."""
    low = high = shortest = longest = None
    for validator in field.validators:
        if isinstance(validator, MinValueValidator):
            low = validator.limit_value
        elif isinstance(validator, MaxValueValidator):
            high = validator.limit_value
        elif isinstance(validator, MinLengthValidator):
            shortest = validator.limit_value
        elif isinstance(validator, MaxLengthValidator):
            longest = validator.limit_value
    return low, high, shortest, longest


def _in_range(value: Any, low: Any, high: Any) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _string_checker(field: serializers.CharField) -> Checker:
    _, _, shortest, longest = _bounds(field)
    allow_blank, trim = field.allow_blank, field.trim_whitespace

    def check(value: Any) -> tuple[bool, Any]:
        if type(value) is not str:
            return _NO
        if value == "" or (trim and value.strip() == ""):
            return (True, "") if allow_blank else _NO
        out = value.strip() if trim else value
        if (shortest is not None and len(out) < shortest) or (longest is not None and len(out) > longest):
            return _NO
        if "\x00" in out or _SURROGATE.search(out):
            return _NO
        return True, out

    return check


def _int_checker(field: serializers.IntegerField) -> Checker:
    low, high, _, _ = _bounds(field)

    def check(value: Any) -> tuple[bool, Any]:
        if type(value) is not int or not -_INT_LIMIT < value < _INT_LIMIT or not _in_range(value, low, high):
            return _NO
        return True, value

    return check


def _float_checker(field: serializers.FloatField) -> Checker:
    low, high, _, _ = _bounds(field)

    def check(value: Any) -> tuple[bool, Any]:
        if type(value) is int and -_INT_LIMIT < value < _INT_LIMIT:
            value = float(value)
        if type(value) is not float or not math.isfinite(value) or not _in_range(value, low, high):
            return _NO
        return True, value

    return check


def _bool_checker(field: serializers.BooleanField) -> Checker:
    def check(value: Any) -> tuple[bool, Any]:
        return (True, value) if type(value) is bool else _NO

    return check


def _choice_checker(field: serializers.ChoiceField) -> Checker:
    choices = dict(field.choice_strings_to_values)

    def check(value: Any) -> tuple[bool, Any]:
        if type(value) is not str or value == "" or value not in choices:
            return _NO
        return True, choices[value]

    return check


def _list_checker(field: serializers.ListField) -> Checker | None:
    child = _checker(field.child)
    if child is None:
        return None
    _, _, shortest, longest = _bounds(field)
    allow_empty = field.allow_empty

    def check(value: Any) -> tuple[bool, Any]:
        if type(value) is not list or (not value and not allow_empty):
            return _NO
        if (shortest is not None and len(value) < shortest) or (longest is not None and len(value) > longest):
            return _NO
        out = []
        for item in value:
            ok, validated = child(item)
            if not ok:
                return _NO
            out.append(validated)
        return True, out

    return check


def _checker(field: serializers.Field) -> Checker | None:
    """The checker for a field, or None when the fast path cannot vouch for it."""
    if type(field) not in _PLAIN or field.read_only or field.allow_null or field.source != field.field_name:
        return None
    for validator in field.validators:
        if type(validator) not in _KNOWN_VALIDATORS or callable(getattr(validator, "limit_value", None)):
            return None
    if isinstance(field, serializers.CharField):
        return _string_checker(field)
    if isinstance(field, serializers.IntegerField):
        return _int_checker(field)
    if isinstance(field, serializers.FloatField):
        return _float_checker(field)
    if isinstance(field, serializers.BooleanField):
        return _bool_checker(field)
    if isinstance(field, serializers.ChoiceField) and not field.allow_blank:
        return _choice_checker(field)
    if isinstance(field, serializers.ListField):
        return _list_checker(field)
    return None


class Plan:
    """The fields of one serializer class, each with its checker and what a missing key means."""

    def __init__(self, fields: list[tuple[str, Checker, bool, Any]]) -> None:
        self.fields = fields  # (name, checker, required, default or `empty`)

    def parse(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if type(body) is not dict:  # a form's QueryDict has DRF rules of its own
            return None
        out: dict[str, Any] = {}
        for name, check, required, default in self.fields:
            if name in body:
                ok, value = check(body[name])
                if not ok:
                    return None
                out[name] = value
            elif required:
                return None
            elif default is not empty:
                out[name] = default() if callable(default) else default
        return out


@functools.cache
def plan_for(serializer_class: type[serializers.Serializer]) -> Plan | None:
    """The fast plan for `serializer_class`, built once; None when the serializer must do it all."""
    if not issubclass(serializer_class, serializers.Serializer) \
            or issubclass(serializer_class, serializers.ModelSerializer):
        return None
    for name in ("validate", "to_internal_value", "run_validation", "validate_empty_values"):
        if getattr(serializer_class, name) is not getattr(serializers.Serializer, name):
            return None
    serializer = serializer_class()
    if serializer.validators:
        return None
    fields = []
    for name, field in serializer.fields.items():
        if field.read_only:
            continue
        if hasattr(serializer, f"validate_{name}"):
            return None
        check = _checker(field)
        if check is None:
            return None
        default = field.default
        if callable(default) and getattr(default, "requires_context", False):
            return None
        fields.append((name, check, field.required, default))
    return Plan(fields)


def parse(serializer_class: type[serializers.Serializer], body: dict[str, Any]) -> dict[str, Any] | None:
    """The serializer's `validated_data` for `body` when the fast path is sure of it, else None."""
    plan = plan_for(serializer_class)
    return plan.parse(body) if plan is not None else None
