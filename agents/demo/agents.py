"""The demo content pipeline's own functions (for the built-in `python` agent), registered like any
user's would be (agents/registry.py)."""
from __future__ import annotations

import re

from agents import registry
from agents.pipelines.context import StepContext, StepError

_CITATION = re.compile(r"\s*\[\d+\]")
_LONG_SENTENCE_WORDS = 35


def _research_body(text: str) -> str:
    """The research notes without their trailing source list."""
    return text.split("\n\nSources:\n", 1)[0].strip()


@registry.function("write_section")
def write_section(ctx: StepContext) -> str:
    """A section of the article from one topic's research: a heading, the findings as prose, and
    the research's sources kept as a reference list."""
    research = ctx.input_text()
    body = _research_body(research)
    if not body:
        raise StepError("the research for this topic is empty")
    sources = research.split("\n\nSources:\n", 1)[1].strip() if "\n\nSources:\n" in research else ""
    item = ctx.item.get("name") if isinstance(ctx.item, dict) else ctx.item
    topic = str(ctx.params.get("topic") or item or "Topic").replace("-", " ").strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", _CITATION.sub("", body)) if s.strip()]
    lead, rest = sentences[:2], sentences[2:]
    parts = [f"## {topic.title()}", "", " ".join(lead)]
    if rest:
        parts += ["", " ".join(rest)]
    if sources:
        parts += ["", "Sources: " + "; ".join(line.split("] ", 1)[-1] for line in sources.splitlines())]
    return "\n".join(parts) + "\n"


@registry.function("review_section")
def review_section(ctx: StepContext) -> str:
    """An editor's pass: flags over-long sentences and missing sources, and signs the section off
    with its word count."""
    section = ctx.input_text().rstrip()
    words = len(section.split())
    notes = []
    long_sentences = [s for s in re.split(r"(?<=[.!?])\s+", section) if len(s.split()) > _LONG_SENTENCE_WORDS]
    if long_sentences:
        notes.append(f"{len(long_sentences)} sentence(s) over {_LONG_SENTENCE_WORDS} words")
    if "Sources:" not in section:
        notes.append("no sources listed")
    verdict = "; ".join(notes) if notes else "ready to publish"
    ctx.log(f"reviewed {words} words: {verdict}")
    return f"{section}\n\n_Reviewed: {words} words, {verdict}._\n"
