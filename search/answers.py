"""Ask: retrieve, then answer with numbered citations to `path@version` (RAG)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from search import keyword, llm, selectors

PASSAGES = 6
NOTHING_FOUND = "I could not find anything in this workspace that answers the question."


@dataclass
class Answer:
    text: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    pending: int = 0


def ask(*, workspace_ids: Sequence[str], question: str, provider: llm.Provider | None = None,
        passages: int = PASSAGES) -> Answer:
    """Answer from the best passages of exactly these workspaces (the caller checked access)."""
    found = selectors.search(workspace_ids=workspace_ids, query=question, k=passages, mode="hybrid",
                             per_file=False)
    if not found.hits:
        return Answer(text=NOTHING_FOUND, pending=found.pending)
    sources = [llm.Source(label=f"{hit.chunk.path}@{hit.chunk.version}", text=hit.chunk.text)
               for hit in found.hits]
    generated = (provider or llm.get_provider()).generate(instruction=question, sources=sources)
    text, cited = llm.renumber(generated, len(sources))
    if not text:
        return Answer(text=NOTHING_FOUND, pending=found.pending)
    terms = keyword.query_terms(question)
    citations = [{"path": found.hits[i].chunk.path, "version": found.hits[i].chunk.version,
                  "snippet": selectors.snippet(found.hits[i].chunk.text, terms)} for i in cited]
    return Answer(text=text, citations=citations, pending=found.pending)
