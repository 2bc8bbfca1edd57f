"""The validation hook: rules a step's outputs must pass before the step completes, so that its
dependents never start on a bad result (a failed check is a failed attempt, retried by policy).

Rules (all optional; see agents/pipelines/spec.py): non_empty, min_words, max_words, min_bytes,
max_bytes, contains, not_contains (case-insensitive), regex (must match somewhere), json (must
parse), function (a registered validator, given `params`).
"""
from __future__ import annotations

import json
import re
from typing import Any

from agents import registry


def _words(data: bytes) -> int:
    return len(data.decode("utf-8", errors="replace").split())


def check_outputs(rules: dict[str, Any] | None, outputs: dict[str, bytes]) -> str | None:
    """None when every output passes, else the first problem, for a human."""
    if not rules:
        return None
    for name, data in outputs.items():
        text = data.decode("utf-8", errors="replace")
        lowered = text.lower()
        if rules.get("non_empty") and not text.strip():
            return f"{name} is empty"
        words = _words(data)
        if "min_words" in rules and words < rules["min_words"]:
            return f"{name} has {words} words, fewer than {rules['min_words']}"
        if "max_words" in rules and words > rules["max_words"]:
            return f"{name} has {words} words, more than {rules['max_words']}"
        if "min_bytes" in rules and len(data) < rules["min_bytes"]:
            return f"{name} is {len(data)} bytes, fewer than {rules['min_bytes']}"
        if "max_bytes" in rules and len(data) > rules["max_bytes"]:
            return f"{name} is {len(data)} bytes, more than {rules['max_bytes']}"
        missing = [w for w in rules.get("contains", []) if w.lower() not in lowered]
        if missing:
            return f"{name} does not mention {', '.join(repr(m) for m in missing)}"
        present = [w for w in rules.get("not_contains", []) if w.lower() in lowered]
        if present:
            return f"{name} mentions {', '.join(repr(p) for p in present)}"
        if "regex" in rules and not re.search(rules["regex"], text):
            return f"{name} does not match /{rules['regex']}/"
        if rules.get("json"):
            try:
                json.loads(text)
            except ValueError as exc:
                return f"{name} is not JSON: {exc}"
    if "function" in rules:
        validator = registry.get_validator(rules["function"])
        if validator is None:
            return f"the validator {rules['function']!r} is no longer registered"
        problem = validator(outputs, dict(rules.get("params") or {}))
        if problem:
            return str(problem)
    return None
