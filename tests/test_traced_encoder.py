"""The traced encoder gives the model's own vectors, for queries and for batches of chunks, and
steps aside when it cannot."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from search import embeddings

QUERIES = [
    "a",
    "competitor pricing",
    "What did the research agents find about competitor pricing in the European market?",
    "Ünïcödé naïve café façade — ¿qué? 東京 emoji 🚀 and code: def f(x): return x ** 2",
    # Far past the model's 256 word pieces: both paths must truncate the same way.
    " ".join(f"section{i} describes the deployment pipeline and its rollback rules" for i in range(80)),
]


def _reference(texts: list[str]) -> np.ndarray:
    return embeddings.get_model().encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                         show_progress_bar=False)


@pytest.fixture
def fresh_encoder(monkeypatch):
    """Forget this process's encoder so that get_encoder builds one under the test's settings."""
    monkeypatch.setattr(embeddings, "_encoder", None)
    monkeypatch.setattr(embeddings, "_encoder_built", False)


def test_a_query_embeds_to_the_vector_encode_gives_for_any_length():
    """GIVEN texts from one letter to past the 256-piece window, with non-ASCII text WHEN embedded as
    queries THEN each vector is the one SentenceTransformer.encode gives, of unit length."""
    assert embeddings.get_encoder() is not None
    got = np.asarray([embeddings.embed_query(text) for text in QUERIES], dtype=np.float32)
    assert got.shape == (len(QUERIES), embeddings.DIMENSIONS)
    assert np.abs(got - _reference(QUERIES)).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_concurrent_queries_each_get_their_own_vector():
    """GIVEN eight threads embedding different queries at once (the search executor's width) THEN
    every vector is its own query's: the compiled graph keeps no state between calls."""
    texts = [f"{text} {i}" for i in range(4) for text in QUERIES[1:4]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = np.asarray(list(pool.map(embeddings.embed_query, texts)), dtype=np.float32)
    assert np.abs(got - _reference(texts)).max() < 1e-5


def test_chunks_embed_in_padded_batches_to_the_vectors_encode_gives():
    """GIVEN the chunks of a Markdown file and texts from one letter to past the 256-piece window
    WHEN embedded as documents, in batches where most rows are padded THEN
    every row is the vector encode gives for that text, in the order the texts were given."""
    from search.chunking import chunk_document
    from search.extract import extract

    body = "\n\n".join(f"## Part {i}\n\n" + " ".join(["The harbour pilot boards the tanker at dawn."] * (i % 7 + 1))
                        for i in range(30)).encode()
    texts = [c.embed_text for c in chunk_document(extract("notes/report.md", body))] + QUERIES
    assert embeddings.get_encoder() is not None
    for batch_size in (1, 3, embeddings.BATCH_SIZE, len(texts)):
        got = embeddings.embed(texts, batch_size=batch_size)
        assert got.shape == (len(texts), embeddings.DIMENSIONS) and got.dtype == np.float32
        assert np.abs(got - _reference(texts)).max() < 1e-5, batch_size


def test_a_trace_that_disagrees_with_encode_is_not_used(fresh_encoder, monkeypatch, caplog):
    """GIVEN a check the trace cannot pass WHEN the encoder is built THEN it is refused with a
    warning and queries are embedded by encode(), with the same vectors."""
    monkeypatch.setattr(embeddings.TracedEncoder, "TOLERANCE", -1.0)
    assert embeddings.get_encoder() is None
    assert "differs from encode()" in caplog.text
    vector = np.asarray(embeddings.embed_query(QUERIES[2]), dtype=np.float32)
    assert np.abs(vector - _reference([QUERIES[2]])[0]).max() < 1e-6


def test_the_trace_can_be_turned_off(fresh_encoder, settings):
    """GIVEN EMBEDDING_TRACED off THEN no trace is built and queries and documents still embed."""
    settings.EMBEDDING_TRACED = False
    assert embeddings.get_encoder() is None
    assert np.abs(embeddings.embed(QUERIES) - _reference(QUERIES)).max() < 1e-6
    vector = np.asarray(embeddings.embed_query(QUERIES[1]), dtype=np.float32)
    assert np.abs(vector - _reference([QUERIES[1]])[0]).max() < 1e-6


def test_a_web_process_loads_the_model_at_start_when_a_workspace_is_in_intelligence_mode(transactional_db):
    """GIVEN a workspace in intelligence mode WHEN a web process starts THEN it loads the model and
    builds its traced encoder by itself, before any search (its health says `model: loaded`), so the
    first search does not wait for it."""
    import time

    from agents.models import User
    from tests.conftest import start_launcher, stop_launcher
    from workspace.services.workspaces import workspace_create

    owner = User.objects.create_user("warm", "warm@example.com", "a long test password")
    workspace_create(user=owner, name="warm", intelligence=True)
    server = start_launcher(workers=1, web_workers=1)
    try:
        deadline = time.monotonic() + 120
        with server.client() as anon:
            while (checks := anon.get("/api/v1/health").json()["checks"])["model"] != "loaded":
                assert time.monotonic() < deadline, checks
                time.sleep(0.5)
    finally:
        stop_launcher(server)
