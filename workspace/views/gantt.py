"""A pipeline run as a Gantt chart: server-side SVG, one row per agent lane, one bar per step.

Rows: the steps of one agent that overlap in time go to separate lanes (a lane is one step at a
time, so the lanes of an agent are how many of its steps ran at once). Bars span a step's start
to its end (or to now, while it runs); the critical path is outlined and its labels start with
"◆", so it reads without colour. Only SVG attributes and classes are used: the page's CSP allows
no inline style.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 960
LABEL_WIDTH = 170
ROW_HEIGHT = 26
BAR_HEIGHT = 18
AXIS_HEIGHT = 26
CHAR_WIDTH = 6.6


@dataclass
class Bar:
    key: str
    agent: str
    status: str
    start: datetime
    end: datetime
    running: bool
    critical: bool
    worker: str = ""
    url: str = ""


@dataclass
class Lane:
    label: str
    bars: list[Bar] = field(default_factory=list)

    @property
    def free_at(self) -> datetime | None:
        return self.bars[-1].end if self.bars else None


def lanes_for(bars: list[Bar]) -> list[Lane]:
    """Pack each agent's bars into as few lanes as possible, in order of start."""
    by_agent: dict[str, list[Lane]] = {}
    for bar in sorted(bars, key=lambda b: (b.start, b.end, b.key)):
        lanes = by_agent.setdefault(bar.agent, [])
        lane = next((lane for lane in lanes if lane.free_at is not None and lane.free_at <= bar.start), None)
        if lane is None:
            lane = Lane(label=bar.agent)
            lanes.append(lane)
        lane.bars.append(bar)
    out: list[Lane] = []
    for agent in sorted(by_agent):
        lanes = by_agent[agent]
        for number, lane in enumerate(lanes, start=1):
            lane.label = agent if len(lanes) == 1 else f"{agent} #{number}"
            out.append(lane)
    return out


def _ticks(span: float) -> list[float]:
    """Round tick positions (seconds) for an axis of `span` seconds: about six of them."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 8:
            return [i * step for i in range(int(span / step) + 1)]
    return [0.0, span]


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 10 and value != int(value) else f"{int(value)} s"


def render(bars: list[Bar], *, origin: datetime, until: datetime, title: str) -> SafeString:
    """The chart. `origin` is the run's submission; `until` the right edge (its end, or now)."""
    lanes = lanes_for(bars)
    span = max(1.0, (until - origin).total_seconds())
    plot = WIDTH - LABEL_WIDTH - 10
    height = AXIS_HEIGHT + max(1, len(lanes)) * ROW_HEIGHT + 6

    def x(moment: datetime) -> float:
        return LABEL_WIDTH + plot * max(0.0, (moment - origin).total_seconds()) / span

    parts = [f'<svg class="gantt" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img" '
             f'aria-labelledby="gantt-title" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="gantt-title">{escape(title)}</title>']
    for tick in _ticks(span):
        tx = LABEL_WIDTH + plot * tick / span
        parts.append(f'<line class="tick" x1="{tx:.1f}" x2="{tx:.1f}" y1="{AXIS_HEIGHT - 6}" y2="{height}"/>'
                     f'<text class="axis" x="{tx:.1f}" y="{AXIS_HEIGHT - 10}">{_seconds(tick)}</text>')
    for row, lane in enumerate(lanes):
        top = AXIS_HEIGHT + row * ROW_HEIGHT
        parts.append(f'<text class="lane" x="4" y="{top + ROW_HEIGHT / 2 + 4:.1f}">{escape(lane.label[:26])}</text>')
        for bar in lane.bars:
            left = x(bar.start)
            width = max(3.0, x(bar.end) - left)
            classes = f"bar status-{bar.status}{' running' if bar.running else ''}{' critical' if bar.critical else ''}"
            seconds = (bar.end - bar.start).total_seconds()
            label = ("◆ " if bar.critical else "") + bar.key
            tip = (f"{bar.key} ({bar.agent}): {bar.status}, {seconds:.2f} s"
                   f"{' so far' if bar.running else ''}{'; on the critical path' if bar.critical else ''}"
                   f"{f'; worker {bar.worker}' if bar.worker else ''}")
            rect = (f'<rect class="{classes}" x="{left:.1f}" y="{top + (ROW_HEIGHT - BAR_HEIGHT) / 2:.1f}" '
                    f'width="{width:.1f}" height="{BAR_HEIGHT}" rx="3"><title>{escape(tip)}</title></rect>')
            fits = int(width / CHAR_WIDTH) - 1
            text = ""
            if fits >= 3:
                shown = label if len(label) <= fits else label[:fits - 1] + "…"
                text = f'<text class="bar-label" x="{left + 4:.1f}" y="{top + ROW_HEIGHT / 2 + 4:.1f}">{escape(shown)}</text>'
            body = rect + text
            parts.append(f'<a href="{escape(bar.url)}">{body}</a>' if bar.url else body)
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every piece of text above goes through escape()


def stage_progress(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One progress bar per spec step (a pattern's expanded steps count towards their group), in
    plan order."""
    stages: dict[str, dict[str, Any]] = {}
    for step in steps:
        name = step.get("group") or step["key"]
        stage = stages.setdefault(name, {"name": name, "total": 0, "done": 0, "running": 0, "failed": 0,
                                         "cancelled": 0, "waiting": 0})
        stage["total"] += 1
        status = step["status"]
        if status == "done":
            stage["done"] += 1
        elif status == "claimed":
            stage["running"] += 1
        elif status == "failed":
            stage["failed"] += 1
        elif status == "cancelled":
            stage["cancelled"] += 1
        else:
            stage["waiting"] += 1
    return list(stages.values())
