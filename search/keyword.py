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
from typing import Any

from django.db import connection
from django.db.models import Case, F, FloatField, Q, Sum, Value, When
from django.db.models.functions import Cast

from search.models import Posting, TermStats

K1 = 1.2
B = 0.75
MAX_TERM = 64
MAX_QUERY_TERMS = 64
# Impacts order a term's postings for pruning; only the order matters, and for the usual tf of 1
# it is the same (shorter chunks first) whatever average length is assumed here.
NOMINAL_LENGTH = 64.0
# Ranking reads at most this many postings per term and workspace, best impact first: the cost of
# a query no longer grows with the collection, and a chunk that ranks in the top hundred is
# practically always among the best few hundred postings of one of its terms (on CACM, nDCG@10
# is 0.428 reading 300 per term and 0.430 reading every posting).
PER_TERM = 200
MAX_PRUNED_LISTS = 200

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
_HUMP = re.compile(r"[a-z][A-Z]|[A-Z][A-Z][a-z]")


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
    """The pieces of an identifier (snake_case, camelCase), indexed beside the whole word. Words
    without either (plain words, numbers, hex digests) are not split."""
    if "_" not in word and not _HUMP.search(word):
        return []
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


def term_weight(*, tf: float, length: float, avgdl: float) -> float:
    """BM25's term-frequency part: saturating in tf, normalised by the chunk's length."""
    return tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / avgdl))


def term_counts(text: str) -> Counter[str]:
    """How often each term occurs in a text; their sum is its length in BM25's sense."""
    return Counter(analyze(text))


def postings_insert(*, workspace_id: str, chunks: Iterable[tuple[int, Counter[str]]]) -> int:
    """Insert the postings of `chunks` (chunk id, term counts) in the caller's transaction, as one
    prepared statement run for every row: a 16 KB file has about 1,700 postings, and building a
    model instance for each cost more than embedding a tenth of the file. Returns rows inserted."""
    rows = []
    for chunk_id, counts in chunks:
        length = sum(counts.values())
        rows += [(chunk_id, workspace_id, term, tf, length,
                  term_weight(tf=tf, length=length, avgdl=NOMINAL_LENGTH))
                 for term, tf in counts.items()]
    if rows:
        table = connection.ops.quote_name(Posting._meta.db_table)
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {table} (chunk_id, workspace_id, term, tf, length, impact) "  # noqa: S608
                "VALUES (%s, %s, %s, %s, %s, %s)", rows)
    return len(rows)


def adjust_frequencies(*, workspace_id: str, delta: Counter[str]) -> None:
    """Add `delta` (chunks gained or lost per term) to the workspace's document frequencies, in
    the caller's transaction: one upsert statement per batch, the same on SQLite and PostgreSQL."""
    changes = [(term, n) for term, n in delta.items() if n]
    table = connection.ops.quote_name(TermStats._meta.db_table)
    for first in range(0, len(changes), 500):
        batch = changes[first:first + 500]
        values = ", ".join(["(%s, %s, %s)"] * len(batch))
        params: list[Any] = [value for term, n in batch for value in (workspace_id, term, n)]
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (workspace_id, term, df) VALUES {values} "  # noqa: S608
                f"ON CONFLICT (workspace_id, term) DO UPDATE SET df = {table}.df + excluded.df", params)


def idf(*, n_chunks: int, df: int) -> float:
    """Lucene's BM25 idf: never negative, so a very common term still counts a little."""
    return math.log(1.0 + (n_chunks - df + 0.5) / (df + 0.5))


def rank(*, terms: Iterable[str], workspace_ids: Sequence[str], stats: tuple[int, int],
         chunk_filter: Q | None = None, limit: int = 100) -> list[tuple[int, float]]:
    """The best `limit` chunks for the terms by BM25, as (chunk id, score), best first."""
    terms = list(terms)
    workspace_ids = list(workspace_ids)
    n_chunks, total = stats
    if not terms or not workspace_ids or n_chunks <= 0:
        return []
    frequencies = _frequencies(terms, workspace_ids)
    if not frequencies:
        return []
    weights = {term: idf(n_chunks=n_chunks, df=df) for term, df in frequencies.items()}
    avgdl = max(total / n_chunks, 1.0)
    if chunk_filter is None and len(weights) * len(workspace_ids) <= MAX_PRUNED_LISTS:
        return _rank_pruned(weights, workspace_ids, avgdl, limit)
    weight = Case(*[When(term=term, then=Value(w)) for term, w in weights.items()], default=Value(0.0),
                  output_field=FloatField())
    tf = Cast(F("tf"), FloatField())
    length = Cast(F("length"), FloatField())
    score = Sum(weight * tf * Value(K1 + 1.0) / (tf + Value(K1 * (1.0 - B)) + Value(K1 * B / avgdl) * length),
                output_field=FloatField())
    qs = Posting.objects.filter(term__in=list(weights), workspace_id__in=workspace_ids)
    if chunk_filter is not None:
        qs = qs.filter(chunk_filter)
    rows = qs.values("chunk_id").annotate(score=score).order_by("-score", "chunk_id")[:limit]
    return [(row["chunk_id"], float(row["score"])) for row in rows]


def _frequencies(terms: list[str], workspace_ids: list[str]) -> dict[str, int]:
    """Chunks containing each term, over the workspaces (terms in none are left out). Plain SQL:
    it runs on every search, beside the query encode, which needs the GIL the ORM would take."""
    table = connection.ops.quote_name(TermStats._meta.db_table)
    sql = (f"SELECT term, SUM(df) FROM {table} WHERE term IN ({', '.join(['%s'] * len(terms))})"  # noqa: S608
           f" AND workspace_id IN ({', '.join(['%s'] * len(workspace_ids))}) GROUP BY term")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*terms, *workspace_ids])
        return {term: int(n) for term, n in cursor.fetchall() if n and n > 0}


def _rank_pruned(weights: dict[str, float], workspace_ids: list[str], avgdl: float,
                 limit: int) -> list[tuple[int, float]]:
    """BM25 over the best PER_TERM postings of each term (by impact, read off the index in order)."""
    table = connection.ops.quote_name(Posting._meta.db_table)
    per_term = max(PER_TERM, 2 * limit)
    lists, list_params = [], []
    for term in weights:
        for workspace_id in workspace_ids:
            lists.append(f"SELECT * FROM (SELECT chunk_id, term, tf, length FROM {table} "  # noqa: S608
                         f"WHERE term = %s AND workspace_id = %s ORDER BY impact DESC LIMIT %s) AS p{len(lists)}")
            list_params += [term, workspace_id, per_term]
    case = "CASE term " + " ".join("WHEN %s THEN %s" for _ in weights) + " ELSE 0.0 END"
    sql = (f"SELECT chunk_id, SUM(({case}) * tf * %s / (tf + %s + %s * length)) AS score "  # noqa: S608
           f"FROM ({' UNION ALL '.join(lists)}) AS candidates "
           f"GROUP BY chunk_id ORDER BY score DESC, chunk_id LIMIT %s")
    params: list[Any] = [value for pair in weights.items() for value in pair]
    params += [K1 + 1.0, K1 * (1.0 - B), K1 * B / avgdl, *list_params, limit]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(int(chunk_id), float(score)) for chunk_id, score in cursor.fetchall()]
