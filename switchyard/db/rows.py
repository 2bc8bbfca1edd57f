"""Model instances from rows read with a plain cursor, for the few statements every request runs.

Building and compiling an ORM query costs several times what the database takes to run a lookup
by key (authentication and the workspace membership check run on every API request). `Columns`
writes the select list once and turns a row into the instance the ORM would have made: the
backend's converters (SQLite hands datetimes back as text) and each field's `from_db_value`,
looked up once per backend, then `Model.from_db`.
"""
from __future__ import annotations

from typing import Any

from django.db import models


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
        return self.model.from_db(connection.alias, self.attnames, converted)
