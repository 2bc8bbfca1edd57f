"""The pipeline agent registry: what a spec may name as `agent`, `scorer`, `validate.function`
or `python`'s `function`.

Register in any module that is imported at start-up (the built-ins in agents/pipelines/builtins.py,
the demo's in agents/demo/agents.py, and every module listed in the PIPELINE_AGENT_MODULES
setting):

    from agents import registry

    @registry.agent("shout", description="Upper-cases its one input.")
    def shout(ctx):
        return ctx.input_text().upper()

    @registry.function("word_count")          # for `agent: python, params: {function: word_count}`
    def word_count(ctx):
        return str(len(ctx.input_text().split()))

    @registry.scorer("short")                 # for `compete: {scorer: short}`: higher is better
    def short(outputs, params):
        return 1.0 / (1 + sum(len(v) for v in outputs.values()))

    @registry.validator("has_title")          # for `validate: {function: has_title}`
    def has_title(outputs, params):
        return None if all(v.startswith(b"#") for v in outputs.values()) else "no markdown title"

An agent receives a `StepContext` (agents/pipelines/context.py) and returns its outputs: a str or
bytes when the step declares one output, else a dict {output name: str | bytes}; or an
`AgentResult` to add a JSON `result` for the task. Registration happens at import time, before
any worker runs a job, and the registry is never changed afterwards.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,59}$")

# How the runner supervises an agent: "python" runs in a thread under a watchdog that fails the
# task at its timeout and abandons the thread; "command" agents run a subprocess that the runner
# kills at the timeout (their function must honour ctx.stop, which `command` does).
KINDS = ("python", "command")


@dataclass(frozen=True)
class AgentDef:
    name: str
    fn: Callable[..., Any]
    description: str = ""
    kind: str = "python"
    # Spec-time check of the step's params: raises workspace.errors.Invalid with a clear message.
    check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None
    # A resource the agent takes a token from before it runs (agents/ratelimit.py), unless the
    # step names another one or `rate_limit: null`.
    rate_limit: str | None = None
    # Aggregators and the judge read every input; the others need at least `min_inputs`.
    min_inputs: int = 0


_agents: dict[str, AgentDef] = {}
_functions: dict[str, Callable[..., Any]] = {}
_scorers: dict[str, Callable[[dict[str, bytes], dict[str, Any]], float]] = {}
_validators: dict[str, Callable[[dict[str, bytes], dict[str, Any]], str | None]] = {}


def _check_name(name: str, what: str) -> None:
    if not NAME_RE.match(name):
        raise ValueError(f"{what} name {name!r} must match {NAME_RE.pattern}")


def agent(name: str, *, description: str = "", kind: str = "python",
          check: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
          rate_limit: str | None = None, min_inputs: int = 0) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(ctx) -> outputs` as the agent `name`."""
    _check_name(name, "An agent")
    if kind not in KINDS:
        raise ValueError(f"kind is one of {KINDS}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _agents and _agents[name].fn is not fn:
            raise ValueError(f"the agent {name!r} is already registered")
        _agents[name] = AgentDef(name=name, fn=fn, description=description or (fn.__doc__ or "").strip(),
                                 kind=kind, check=check, rate_limit=rate_limit, min_inputs=min_inputs)
        return fn

    return register


def function(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(ctx) -> outputs` for the built-in `python` agent (`params.function`)."""
    _check_name(name, "A function")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _functions and _functions[name] is not fn:
            raise ValueError(f"the function {name!r} is already registered")
        _functions[name] = fn
        return fn

    return register


def scorer(name: str) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Register `fn(outputs, params) -> float` (higher is better) for competitive steps."""
    _check_name(name, "A scorer")

    def register(fn: Callable[..., float]) -> Callable[..., float]:
        if name in _scorers and _scorers[name] is not fn:
            raise ValueError(f"the scorer {name!r} is already registered")
        _scorers[name] = fn
        return fn

    return register


def validator(name: str) -> Callable[[Callable[..., str | None]], Callable[..., str | None]]:
    """Register `fn(outputs, params) -> None | problem` for `validate: {function: name}`."""
    _check_name(name, "A validator")

    def register(fn: Callable[..., str | None]) -> Callable[..., str | None]:
        if name in _validators and _validators[name] is not fn:
            raise ValueError(f"the validator {name!r} is already registered")
        _validators[name] = fn
        return fn

    return register


def get_agent(name: str) -> AgentDef | None:
    return _agents.get(name) if isinstance(name, str) else None


def get_function(name: str) -> Callable[..., Any] | None:
    return _functions.get(name) if isinstance(name, str) else None


def get_scorer(name: str) -> Callable[..., float] | None:
    return _scorers.get(name) if isinstance(name, str) else None


def get_validator(name: str) -> Callable[..., str | None] | None:
    return _validators.get(name) if isinstance(name, str) else None


def agent_names() -> list[str]:
    return sorted(_agents)


def function_names() -> list[str]:
    return sorted(_functions)


def scorer_names() -> list[str]:
    return sorted(_scorers)


def validator_names() -> list[str]:
    return sorted(_validators)
