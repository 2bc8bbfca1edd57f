"""What a run measures: per-step start and end, makespan, the critical path, and the speed-up of
running the steps in parallel over running them one after another (the sum of their durations).

Times are the database clock's (claims and completions are stamped there), so steps run by
workers on different hosts are comparable.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StepTiming:
    key: str
    after: list[str]
    started_at: datetime | None
    ended_at: datetime | None
    estimate: float
    # Ended (done, failed, cancelled): a step that ended without running weighs nothing.
    final: bool = False

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())


def critical_path(steps: list[StepTiming]) -> dict[str, Any]:
    """The longest chain of dependent steps, weighted by measured durations (estimates for the
    steps that have not run; zero for the ones that never will be measured)."""
    by_key = {s.key: s for s in steps}
    best: dict[str, tuple[float, str | None]] = {}
    estimated = False

    def weight(step: StepTiming) -> float:
        nonlocal estimated
        measured = step.duration
        if measured is not None:
            return measured
        if not step.final:
            estimated = True
            return step.estimate
        return 0.0

    # `steps` is in topological order (the plan's), so every dependency comes first.
    for step in steps:
        previous: tuple[float, str | None] = (0.0, None)
        for dependency in step.after:  # the first of equally long chains, in plan order
            if dependency in best and (previous[1] is None or best[dependency][0] > previous[0]):
                previous = (best[dependency][0], dependency)
        best[step.key] = (previous[0] + weight(step), previous[1])
    if not best:
        return {"steps": [], "seconds": 0.0, "estimated": False}
    end = max(best, key=lambda k: best[k][0])
    chain = []
    node: str | None = end
    while node is not None:
        chain.append(node)
        node = best[node][1]
    chain.reverse()
    return {"steps": chain, "seconds": round(best[end][0], 4), "estimated": estimated and
            any(by_key[k].duration is None for k in chain)}


def run_metrics(*, created_at: datetime, steps: list[StepTiming]) -> dict[str, Any]:
    ran = [s for s in steps if s.duration is not None]
    ends = [s.ended_at for s in ran if s.ended_at is not None]
    starts = [s.started_at for s in ran if s.started_at is not None]
    total = sum(s.duration or 0.0 for s in ran)
    makespan = (max(ends) - created_at).total_seconds() if ends else None
    busy_span = (max(ends) - min(starts)).total_seconds() if ends and starts else None
    path = critical_path(steps)
    return {
        # From submission to the last step's end: dispatch latency included.
        "makespan_seconds": round(makespan, 4) if makespan is not None else None,
        # From the first step's start to the last step's end.
        "span_seconds": round(busy_span, 4) if busy_span is not None else None,
        "sum_seconds": round(total, 4),
        "speedup": round(total / makespan, 4) if makespan else None,
        "critical_path": path,
        "makespan_over_critical_path": round(makespan / path["seconds"], 4)
        if makespan and path["seconds"] else None,
        "steps_measured": len(ran),
    }
