"""Model instances from rows read with a plain cursor, for the few statements every request runs.

Building and compiling an ORM query costs several times what the database takes to run a lookup
by key (authentication and the workspace membership check run on every API request). `Columns`
writes the select list once and turns a row into the instance the ORM would have made: the
backend's converters (SQLite hands datetimes back as text) and each field's `from_db_value`,
looked up once per backend, then `saved_instance`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import models
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init


def saved_instance(model: type[models.Model], alias: str, attnames: Sequence[str], values: Sequence[Any]) -> Any:
    """What `model.from_db(alias, attnames, values)` makes of a row holding every concrete field,
    made as unpickling makes an instance: `__new__`, the attributes, a saved state. Model.__init__,
    with its loop over the fields, the foreign keys' descriptors and two signals, took 4.8 us for a
    lock against 2.0, and every lock grant and release and every API request's authentication build
    some. A model with its own `from_db`, or with a pre_init or post_init receiver, gets `from_db`."""
    if (model.from_db.__func__ is not models.Model.from_db.__func__
            or pre_init.has_listeners(model) or post_init.has_listeners(model)):
        return model.from_db(alias, attnames, values)
    instance = model.__new__(model)
    state = ModelState()
    state.adding, state.db = False, alias
    instance.__dict__.update(zip(attnames, values, strict=True), _state=state)
    return instance


class Columns:
    def __init__(self, model: type[models.Model], alias: str) -> None:
        self.model = model
        self.fields = list(model._meta.concrete_fields)
        self.attnames = [field.attname for field in self.fields]
        self.sql = ", ".join(f"{alias}.{field.column}" for field in self.fields)
        self._converters: dict[str, list[tuple[int, Any, list[Any]]]] = {}

    def __len__(self) -> int:
        return len(self.fields)

    def instance(self, connection: Any, values: tuple[Any, ...] | list[Any]) -> Any:
        """The model instance for `values` (this select list's part of a row) read on `connection`."""
        converters = self._converters.get(connection.vendor)
        if converters is None:
            converters = []
            for i, field in enumerate(self.fields):
                col = field.get_col(self.model._meta.db_table)
                functions = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
                if functions:  # only the columns that have any, in order
                    converters.append((i, col, functions))
            self._converters[connection.vendor] = converters
        if len(values) != len(self.fields):
            raise ValueError(f"{len(values)} values for the {len(self.fields)} columns of {self.model.__name__}")
        converted = list(values)
        for i, col, functions in converters:
            value = converted[i]
            for convert in functions:
                value = convert(value, col, connection)
            converted[i] = value
        return saved_instance(self.model, connection.alias, self.attnames, converted)
