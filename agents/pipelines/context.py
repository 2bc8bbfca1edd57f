"""What an agent sees of its step: a `StepContext`, built fresh for every attempt.

Nothing is shared between steps through process globals: each context has its own inputs, its
own scratch directory (`<data dir>/scratch/<task id>/<lease id>`), its own stop signal and log.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Stopped(Exception):  # noqa: N818 - a signal, not an error
    """The step was told to stop: its timeout passed, it was cancelled, or its lease was lost."""


class StepError(Exception):
    """An agent's failure. `retry=False` when another attempt cannot do better (a bad spec
    parameter, a missing program), so the task fails at once."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


@dataclass(frozen=True)
class Input:
    name: str                  # the artifact name, or "file:<path>"
    path: str
    version: int
    data: bytes
    producer: str | None = None  # the step key that wrote it (None for workspace files)
    weight: float = 1.0

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")

    @property
    def label(self) -> str:
        return f"{self.path}@{self.version}"

    def json(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError as exc:
            raise StepError(f"the input {self.name} is not JSON: {exc}", retry=False) from exc


@dataclass
class AgentResult:
    """What an agent may return instead of bare outputs: outputs plus a JSON result for the task."""

    outputs: dict[str, bytes | str] | bytes | str
    result: dict[str, Any] | None = None


@dataclass
class StepContext:
    run_id: str
    workspace_id: str
    task_id: str
    key: str
    agent: str
    attempt: int
    params: dict[str, Any]
    inputs: Sequence[Input]
    output_names: Sequence[str]
    # The step's own scratch directory, created on first use of `scratch` (most agents need none).
    scratch_path: Path
    item: Any = None
    trusted: bool = False
    rate_limit: str | None = None
    rate_limits: dict[str, Any] = field(default_factory=dict)
    # For a judge: the attempts, [{"key", "status", "score"}], and the winner already declared.
    candidates: list[dict[str, Any]] = field(default_factory=list)
    winner: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""
    log_lines: list[str] = field(default_factory=list)
    # Seconds spent waiting for rate-limit tokens, reported in the task's result.
    throttled_seconds: float = 0.0

    @property
    def scratch(self) -> Path:
        self.scratch_path.mkdir(parents=True, exist_ok=True)
        return self.scratch_path

    def request_stop(self, reason: str) -> None:
        if not self.stop.is_set():
            self.stop_reason = reason
            self.stop.set()

    def check_stop(self) -> None:
        if self.stop.is_set():
            raise Stopped(self.stop_reason or "stopped")

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once (raising Stopped) when the step is told to stop."""
        if self.stop.wait(max(0.0, seconds)):
            raise Stopped(self.stop_reason or "stopped")

    def log(self, message: str) -> None:
        if len(self.log_lines) < 200:
            self.log_lines.append(str(message)[:2000])

    def input_text(self, index: int = 0) -> str:
        if not self.inputs:
            raise StepError(f"the agent {self.agent!r} needs an input", retry=False)
        return self.inputs[index].text

    def take_token(self, resource: str | None = None, *, timeout: float = 300.0) -> float:
        """Wait for a token of `resource` (default: the step's rate limit); returns seconds waited."""
        from agents.ratelimit import bucket_for

        name = resource or self.rate_limit
        if not name:
            return 0.0
        waited = bucket_for(name=name, workspace_id=self.workspace_id,
                            spec_limits=self.rate_limits).take(timeout=timeout, stop=self.stop)
        self.check_stop()
        self.throttled_seconds += max(0.0, waited)
        return waited

    def generate(self, *, instruction: str, inputs: Sequence[Input] | None = None) -> str:
        """Text from the configured LLM provider (search/llm.py: offline extractive by default,
        OpenAI-compatible when configured), with the inputs as its numbered sources."""
        from search.llm import Source, get_provider

        self.check_stop()
        sources = [Source(label=i.label, text=i.text) for i in (self.inputs if inputs is None else inputs)]
        return get_provider().generate(instruction=instruction, sources=sources)
