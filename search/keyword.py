"""The keyword index: text analysis, postings, and BM25 ranking in SQL.

Ranking is one aggregate query over the postings' covering index, the same on SQLite and
PostgreSQL; the collection statistics it needs (chunk count and total length per workspace,
document frequency per term) are read from the database on every query, so every process ranks
identically and nothing is rebuilt in memory.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from django.db.models import Case, Count, F, FloatField, Q, Sum, Value, When
from django.db.models.functions import Cast

from search.models import KeywordStats, Posting

K1 = 1.2
B = 0.75
MAX_TERM = 64
MAX_QUERY_TERMS = 64

STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between
both but by can could did do does doing down during each either few for from further had has have having
he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not of off on once only or other our ours ourselves out over own same she should so some such than
that the their theirs them themselves then there these they this those through to too under until up
very was we were what when where which while who whom why will with would you your yours yourself
yourselves also may might must shall us etc via per
""".split())

_WORD = re.compile(r"\w+", re.UNICODE)
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


def stem(word: str) -> str:
    """Harman's S-stemmer: plural endings only, so that 'systems' finds 'system'."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def normalize(word: str) -> str | None:
    word = word.lower()
    if word in STOPWORDS or len(word) > MAX_TERM or (len(word) < 2 and not word.isdigit()):
        return None
    return stem(word)


def _parts(word: str) -> list[str]:
    """The pieces of an identifier: snake_case and camelCase, beside the whole word."""
    pieces = [p for chunk in word.split("_") for p in (_CAMEL.findall(chunk) or [chunk]) if p]
    return pieces if len(pieces) > 1 else []


def analyze(text: str) -> list[str]:
    """The terms of a text, in order, repeated as often as they occur."""
    terms: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group()
        if len(word) > MAX_TERM:
            continue
        for candidate in (word, *_parts(word)):
            term = normalize(candidate)
            if term:
                terms.append(term)
    return terms


def query_terms(query: str) -> list[str]:
    """Distinct terms of a query, in first-seen order."""
    return list(dict.fromkeys(analyze(query)))[:MAX_QUERY_TERMS]


def postings_for(*, chunk_id: str, workspace_id: str, text: str) -> tuple[list[Posting], int]:
    """The postings of one chunk, and its length in terms."""
    counts = Counter(analyze(text))
    length = sum(counts.values())
    return [Posting(chunk_id=chunk_id, workspace_id=workspace_id, term=term, tf=tf, length=length)
            for term, tf in counts.items()], length


def collection_stats(workspace_ids: Sequence[str]) -> tuple[int, int]:
    """(searchable chunks, their total length) over the given workspaces."""
    totals = KeywordStats.objects.filter(workspace_id__in=workspace_ids).aggregate(
        chunks=Sum("chunks"), tokens=Sum("tokens"))
    return int(totals["chunks"] or 0), int(totals["tokens"] or 0)


def idf(*, n_chunks: int, df: int) -> float:
    """Lucene's BM25 idf: never negative, so a very common term still counts a little."""
    return math.log(1.0 + (n_chunks - df + 0.5) / (df + 0.5))


def rank(*, terms: Iterable[str], workspace_ids: Sequence[str], stats: tuple[int, int],
         chunk_filter: Q | None = None, limit: int = 100) -> list[tuple[str, float]]:
    """The best `limit` chunks for the terms by BM25, as (chunk id, score), best first."""
    terms = list(terms)
    n_chunks, total = stats
    if not terms or not workspace_ids or n_chunks <= 0:
        return []
    scope = Posting.objects.filter(term__in=terms, workspace_id__in=list(workspace_ids))
    frequencies = {row["term"]: row["n"] for row in scope.values("term").annotate(n=Count("term"))}
    if not frequencies:
        return []
    avgdl = max(total / n_chunks, 1.0)
    weight = Case(*[When(term=term, then=Value(idf(n_chunks=n_chunks, df=df)))
                    for term, df in frequencies.items()], default=Value(0.0), output_field=FloatField())
    tf = Cast(F("tf"), FloatField())
    length = Cast(F("length"), FloatField())
    score = Sum(weight * tf * Value(K1 + 1.0) / (tf + Value(K1 * (1.0 - B)) + Value(K1 * B / avgdl) * length),
                output_field=FloatField())
    qs = scope.filter(term__in=list(frequencies))
    if chunk_filter is not None:
        qs = qs.filter(chunk_filter)
    rows = qs.values("chunk_id").annotate(score=score).order_by("-score", "chunk_id")[:limit]
    return [(row["chunk_id"], float(row["score"])) for row in rows]
