"""Retrieval quality on CACM: nDCG@10 and recall@100 of /search, per mode.

Loads the 3,204 CACM abstracts from ../shared/data/ir/cacm (title on the first line, then the
abstract) into a fresh workspace through the API, waits until the index has caught up, runs
every judged query (52) through `POST /api/v1/workspaces/{ws}/search` in each mode, and prints
the figures; the last line is one JSON object with a `targets` list.

    python bench/retrieval.py                  # starts its own server (launcher, temp data dir)
    SWITCHYARD_URL=... SWITCHYARD_TOKEN=... python bench/retrieval.py
"""
from __future__ import annotations

import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Server, bench_server, emit, target  # noqa: E402

DATA = Path(os.environ.get("CACM_DIR", Path(__file__).resolve().parent.parent.parent / "shared/data/ir/cacm"))
MODES = ("hybrid", "semantic", "keyword")
TARGETS = {"hybrid": 0.49, "semantic": 0.40}


def _records(path: Path) -> list[dict[str, str]]:
    """SMART format: `.I n` starts a record, `.X` starts a field named X."""
    records: list[dict[str, str]] = []
    field = ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(".I "):
            records.append({"id": line[3:].strip()})
            field = ""
        elif len(line) == 2 and line.startswith(".") and line[1].isalpha():
            field = line[1]
        elif records and field:
            records[-1][field] = records[-1].get(field, "") + line + "\n"
    return records


def documents() -> dict[str, str]:
    """doc id -> file text: the title on the first line, then the abstract."""
    docs = {}
    for rec in _records(DATA / "cacm.all"):
        title = " ".join(rec.get("T", "").split())
        abstract = " ".join(rec.get("W", "").split())
        docs[rec["id"]] = f"{title}\n\n{abstract}\n" if abstract else f"{title}\n"
    return docs


def queries() -> dict[str, str]:
    texts = {str(int(rec["id"])): " ".join(rec.get("W", "").split()) for rec in _records(DATA / "query.text")}
    return {qid: text for qid, text in texts.items() if text}


def qrels() -> dict[str, set[str]]:
    judged: dict[str, set[str]] = {}
    for line in (DATA / "qrels.text").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            judged.setdefault(str(int(parts[0])), set()).add(str(int(parts[1])))
    return judged


def doc_path(doc_id: str) -> str:
    return f"cacm/{int(doc_id):04d}.txt"


def doc_of(path: str) -> str:
    return str(int(path.rsplit("/", 1)[-1].split(".")[0]))


def ndcg_at(ranked: list[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: list[str], relevant: set[str], k: int = 100) -> float:
    return len(set(ranked[:k]) & relevant) / len(relevant) if relevant else 0.0


def evaluate(run: dict[str, list[str]], judged: dict[str, set[str]]) -> dict[str, float]:
    ids = [q for q in judged if q in run]
    return {
        "ndcg@10": sum(ndcg_at(run[q], judged[q]) for q in ids) / len(ids),
        "recall@100": sum(recall_at(run[q], judged[q]) for q in ids) / len(ids),
        "queries": len(ids),
    }


def load(server: Server, docs: dict[str, str]) -> tuple[str, float]:
    with server.client() as api:
        response = api.post("/api/v1/workspaces", json={"name": f"cacm-{int(time.time())}", "intelligence": True})
        response.raise_for_status()
        ws = response.json()["id"]
    started = time.monotonic()

    def put(item: tuple[str, str]) -> None:
        with server.client() as api:
            api.put(f"/api/v1/workspaces/{ws}/files/{doc_path(item[0])}",
                    content=item[1].encode()).raise_for_status()

    items = list(docs.items())
    with ThreadPoolExecutor(max_workers=4) as pool:
        for first in range(0, len(items), 200):
            list(pool.map(put, items[first:first + 200]))
    return ws, time.monotonic() - started


def wait_indexed(server: Server, ws: str, expected: int, timeout: float = 3600) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    with server.client() as api:
        while True:
            counts = api.get(f"/api/v1/workspaces/{ws}/index", params={"limit": 1}).json()["counts"]
            done = counts["indexed"] + counts["error"] + counts["not_indexable"]
            print(f"\rindexed {done}/{expected}", end="", file=sys.stderr, flush=True)
            if counts["pending"] == 0 and done >= expected:
                print(file=sys.stderr)
                return counts
            if time.monotonic() > deadline:
                raise SystemExit(f"indexing did not finish within {timeout}s: {counts}")
            time.sleep(1.0)


def run_queries(server: Server, ws: str, mode: str, texts: dict[str, str]) -> tuple[dict[str, list[str]], list[float]]:
    run: dict[str, list[str]] = {}
    latencies: list[float] = []
    with server.client() as api:
        for qid, text in texts.items():
            started = time.perf_counter()
            response = api.post(f"/api/v1/workspaces/{ws}/search", json={"query": text, "k": 100, "mode": mode})
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
            run[qid] = [doc_of(hit["path"]) for hit in response.json()["results"]]
    return run, latencies


def main() -> None:
    docs, texts, judged = documents(), queries(), qrels()
    texts = {q: t for q, t in texts.items() if q in judged}
    figures: dict[str, Any] = {"documents": len(docs), "judged_queries": len(texts)}
    with bench_server(workers=2, chroma=True) as server:
        ws, write_s = load(server, docs)
        figures["write_seconds"] = round(write_s, 1)
        started = time.monotonic()
        figures["index_states"] = wait_indexed(server, ws, len(docs))
        figures["index_catch_up_seconds"] = round(time.monotonic() - started, 1)
        for mode in MODES:
            run, latencies = run_queries(server, ws, mode, texts)
            scores = evaluate(run, judged)
            latencies.sort()
            figures[mode] = {**{k: round(v, 4) for k, v in scores.items()},
                             "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1)}
            print(f"{mode:9s} nDCG@10={scores['ndcg@10']:.4f} recall@100={scores['recall@100']:.4f}",
                  file=sys.stderr)
    targets = [target(f"{mode} nDCG@10", figures[mode]["ndcg@10"], goal, "nDCG", figures[mode]["ndcg@10"] >= goal)
               for mode, goal in TARGETS.items()]
    emit(figures, targets)


if __name__ == "__main__":
    main()
