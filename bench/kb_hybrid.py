"""Hybrid top-5 search: our embedded store (SQLite FTS5 + numpy) vs LanceDB's native hybrid search.

    make bench-kb        (or: .venv/bench/bin/python -m bench.kb_hybrid)

Same texts and same vectors in both: the help centre's real chunks (embedded with the local
model) plus generated filler chunks up to 1k, 20k and 100k. Filler texts are sentences drawn
from the help centre's own vocabulary; filler vectors are blends of real chunk vectors plus
noise, so both the keyword and the vector side meet look-alike distractors. Reported per size:
ingest rate (chunks/s, vectors given), top-5 hybrid latency p50/p95 over the labelled questions
(query vectors computed once, before timing), and recall@5 of both on the labelled set.

Target (issue 4): our p95 <= LanceDB's p50 at 20k, with recall@5 >= LanceDB's.
LanceDB runs with its defaults: native FTS index, exhaustive vector search (no ANN index at
these sizes), RRF fusion. It is installed only in the bench env (.venv/bench).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.chunking import Chunk, chunk_document
from retrieval.documents import Document, find_files, read_document
from retrieval.embedders import LocalE5Embedder, normalise_rows
from retrieval.evaluation import load_questions
from retrieval.sqlite_store import SQLiteKnowledgeStore

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LANCE_LOG", "error")  # its deprecation notices on every query are noise here
CHUNKS_PER_FILLER_DOC = 10


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def real_corpus(embedder: LocalE5Embedder) -> tuple[list[Document], list[list[Chunk]], list[np.ndarray]]:
    documents = [read_document(p) for p in find_files([ROOT / "knowledge"])]
    chunks = [chunk_document(d) for d in documents]
    vectors = [embedder.embed_passages([c.embedding_text for c in cs]) for cs in chunks]
    return documents, chunks, vectors


def filler(n_chunks: int, real_chunks: list[Chunk], real_vectors: np.ndarray, seed: int = 7
           ) -> tuple[list[Document], list[list[Chunk]], list[np.ndarray]]:
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    vocabulary = sorted({w for c in real_chunks for w in re.findall(r"[a-z]+", c.text.lower()) if len(w) > 2})
    documents, chunks, vectors = [], [], []
    for d in range(0, n_chunks, CHUNKS_PER_FILLER_DOC):
        doc_id = f"filler-{d // CHUNKS_PER_FILLER_DOC}"
        count = min(CHUNKS_PER_FILLER_DOC, n_chunks - d)
        title = " ".join(rng.choice(vocabulary) for _ in range(3)).capitalize()
        doc = Document(doc_id, title, "", f"filler/{doc_id}.md", f"h{d}")
        doc_chunks = []
        for i in range(count):
            words = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(40, 120)))
            doc_chunks.append(Chunk(f"{doc_id}#{i}", doc_id, i, title, f"{title} › part {i}", words, doc.source,
                                    doc.content_hash))
        a = real_vectors[nrng.integers(len(real_vectors), size=count)]
        b = real_vectors[nrng.integers(len(real_vectors), size=count)]
        mixed = normalise_rows(a + b + nrng.normal(0, 0.04, size=a.shape).astype(np.float32))
        documents.append(doc)
        chunks.append(doc_chunks)
        vectors.append(mixed)
    return documents, chunks, vectors


def bench_ours(path: Path, corpus: tuple[list, list, list], questions: list[Any], query_vectors: np.ndarray,
               repeat: int) -> dict[str, Any]:
    store = SQLiteKnowledgeStore(path)
    documents, chunks, vectors = corpus
    started = time.perf_counter()
    for document, doc_chunks, doc_vectors in zip(documents, chunks, vectors, strict=True):
        store.replace_document(document, doc_chunks, doc_vectors, "bench")
    ingest_s = time.perf_counter() - started
    store.search("warm up", query_vectors[0], k=5)  # loads the matrix
    latencies, found = [], 0
    for round_ in range(repeat):
        for question, vector in zip(questions, query_vectors, strict=True):
            t = time.perf_counter()
            hits = store.search(question.question, vector, k=5, alpha=0.6)
            latencies.append((time.perf_counter() - t) * 1000)
            if round_ == 0 and question.doc_id in {h.doc_id for h in hits}:
                found += 1
    store.close()
    return _figures(ingest_s, sum(len(c) for c in chunks), latencies, found, questions)


def bench_lancedb(path: Path, corpus: tuple[list, list, list], questions: list[Any], query_vectors: np.ndarray,
                  repeat: int) -> dict[str, Any]:
    import lancedb
    import pyarrow as pa
    from lancedb.index import FTS

    _documents, chunks, vectors = corpus
    flat = [c for cs in chunks for c in cs]
    matrix = np.vstack(vectors).astype(np.float32)
    started = time.perf_counter()
    db = lancedb.connect(str(path))
    data = pa.table({
        "chunk_id": [c.chunk_id for c in flat], "doc_id": [c.doc_id for c in flat],
        "text": [f"{c.title_path}\n{c.text}" for c in flat],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1]),
    })
    table = db.create_table("chunks", data=data, mode="overwrite")
    table.create_index("text", config=FTS(), replace=True)
    ingest_s = time.perf_counter() - started
    latencies, found = [], 0
    for round_ in range(repeat):
        for question, vector in zip(questions, query_vectors, strict=True):
            t = time.perf_counter()
            rows = (table.search(query_type="hybrid").vector(vector.tolist()).text(question.question)
                    .limit(5).select(["doc_id"]).to_list())
            latencies.append((time.perf_counter() - t) * 1000)
            if round_ == 0 and question.doc_id in {r["doc_id"] for r in rows}:
                found += 1
    return _figures(ingest_s, len(flat), latencies, found, questions)


def _figures(ingest_s: float, n: int, latencies: list[float], found: int, questions: list[Any]) -> dict[str, Any]:
    return {"chunks": n, "ingest_s": round(ingest_s, 3), "ingest_chunks_per_s": round(n / ingest_s, 1),
            "p50_ms": round(percentile(latencies, 50), 3), "p95_ms": round(percentile(latencies, 95), 3),
            "mean_ms": round(statistics.fmean(latencies), 3), "samples": len(latencies),
            "recall_at_5": round(found / len(questions), 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,20000,100000")
    parser.add_argument("--repeat", type=int, default=3, help="passes over the questions per size")
    parser.add_argument("--questions", type=Path, default=ROOT / "eval" / "kb_questions.yml")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_kb_hybrid.json")
    args = parser.parse_args()
    embedder = LocalE5Embedder()
    questions = [q for q in load_questions(args.questions) if q.doc_id]
    query_vectors = embedder.embed_queries([q.question for q in questions])
    documents, chunks, vectors = real_corpus(embedder)
    real_chunks = [c for cs in chunks for c in cs]
    real_matrix = np.vstack(vectors)
    print(f"{len(real_chunks)} real chunks from {len(documents)} articles; {len(questions)} labelled questions")
    results: dict[str, Any] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        extra = filler(max(0, size - len(real_chunks)), real_chunks, real_matrix)
        corpus = (documents + extra[0], chunks + extra[1], vectors + extra[2])
        with tempfile.TemporaryDirectory(prefix="kbbench_") as tmp:
            ours = bench_ours(Path(tmp) / "kb.db", corpus, questions, query_vectors, args.repeat)
            lance = bench_lancedb(Path(tmp) / "lance", corpus, questions, query_vectors, args.repeat)
        results[str(size)] = {"ours": ours, "lancedb": lance}
        print(f"{size:>7} chunks | ours: p50 {ours['p50_ms']:.2f} ms p95 {ours['p95_ms']:.2f} ms, "
              f"ingest {ours['ingest_chunks_per_s']:.0f}/s, recall@5 {ours['recall_at_5']:.3f} | lancedb: p50 "
              f"{lance['p50_ms']:.2f} ms p95 {lance['p95_ms']:.2f} ms, ingest {lance['ingest_chunks_per_s']:.0f}/s, "
              f"recall@5 {lance['recall_at_5']:.3f}")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    ok = True
    if "20000" in results:
        ours, lance = results["20000"]["ours"], results["20000"]["lancedb"]
        checks = [(f"ours p95 {ours['p95_ms']:.2f} ms <= LanceDB p50 {lance['p50_ms']:.2f} ms at 20k",
                   ours["p95_ms"] <= lance["p50_ms"]),
                  (f"recall@5 {ours['recall_at_5']:.3f} >= LanceDB {lance['recall_at_5']:.3f}",
                   ours["recall_at_5"] >= lance["recall_at_5"])]
        for name, passed in checks:
            print(f"  {'PASS' if passed else 'MISS'}  {name}")
            ok = ok and passed
    print(f"figures written to {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
