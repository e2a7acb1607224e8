"""Ingesting files into a store: unchanged documents are skipped, changed ones replaced."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.chunking import chunk_document
from retrieval.documents import UnreadableDocument, find_files, read_document
from retrieval.embedders import Embedder
from retrieval.store import Hit, KnowledgeStore, check_embedder


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "<path>: <reason>"
    chunks: int = 0


def ingest_paths(store: KnowledgeStore, embedder: Embedder, paths: Iterable[Path],
                 progress: Callable[[Path], None] | None = None) -> IngestReport:
    check_embedder(store.embedder_name(), embedder.name)
    report = IngestReport()
    seen: dict[str, str] = {}
    for path in list(find_files(paths)):
        if progress:
            progress(path)
        try:
            document = read_document(path)
        except UnreadableDocument as error:
            report.failed.append(str(error))
            continue
        if document.doc_id in seen:
            report.failed.append(f"{path}: same doc_id {document.doc_id!r} as {seen[document.doc_id]}; rename one")
            continue
        seen[document.doc_id] = str(path)
        existing = store.document(document.doc_id)
        if existing is not None and existing.content_hash == document.content_hash:
            report.unchanged.append(document.doc_id)
            continue
        chunks = chunk_document(document)
        vectors = embedder.embed_passages([chunk.embedding_text for chunk in chunks])
        store.replace_document(document, chunks, vectors, embedder.name)
        report.chunks += len(chunks)
        (report.updated if existing else report.added).append(document.doc_id)
    return report


def search(store: KnowledgeStore, embedder: Embedder, question: str, k: int = 5, alpha: float = 0.7) -> list[Hit]:
    check_embedder(store.embedder_name(), embedder.name)
    if not question.strip():
        return []
    vector: np.ndarray = embedder.embed_queries([question])[0]
    return store.search(question, vector, k=k, alpha=alpha)
