"""The one small interface both backends implement, and the fusion they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from retrieval.chunking import Chunk
from retrieval.documents import Document

DEFAULT_ALPHA = 0.5  # weight of the vector side in the fused score (0 = keywords only, 1 = vectors only)
CANDIDATES = 50  # per side, before fusion


class EmbedderMismatch(RuntimeError):
    """The index was built by another embedder: its vectors and the query's are not comparable."""


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    doc_id: str
    title: str
    title_path: str
    text: str
    source: str
    score: float  # fused, 0..1
    vector_score: float  # cosine similarity of the query to the chunk (-1..1); 0 when not a vector candidate
    keyword_score: float  # raw BM25; 0 when no query word matched

    def as_json(self) -> dict[str, object]:
        return {"doc_id": self.doc_id, "title": self.title, "chunk": self.text, "score": round(self.score, 4),
                "source": self.source}


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    title: str
    source: str
    content_hash: str
    version: int
    chunks: int
    updated_at: float


class KnowledgeStore(Protocol):
    def embedder_name(self) -> str | None: ...
    def documents(self) -> list[DocumentInfo]: ...
    def document(self, doc_id: str) -> DocumentInfo | None: ...
    def replace_document(self, document: Document, chunks: Sequence[Chunk], vectors: np.ndarray,
                         embedder_name: str) -> DocumentInfo: ...
    def delete_document(self, doc_id: str) -> bool: ...
    def search(self, text: str, vector: np.ndarray, k: int = 5, alpha: float = DEFAULT_ALPHA) -> list[Hit]: ...
    def close(self) -> None: ...


def check_embedder(store_embedder: str | None, embedder_name: str) -> None:
    if store_embedder is not None and store_embedder != embedder_name:
        raise EmbedderMismatch(
            f"this knowledge base was built with {store_embedder!r}, not {embedder_name!r}: re-ingest it "
            f"with the current embedder into an empty KB_PATH, or set KB_EMBEDDER to the one that built it")


def relative_score_fusion(
    vector: dict[str, float], keyword: dict[str, float], alpha: float
) -> dict[str, float]:
    """Weaviate's relativeScoreFusion: each side min-max scaled to 0..1, then weighted by alpha."""

    def scaled(scores: dict[str, float]) -> dict[str, float]:
        if not scores:
            return {}
        low, high = min(scores.values()), max(scores.values())
        if high - low < 1e-12:
            return {key: 1.0 for key in scores}
        return {key: (value - low) / (high - low) for key, value in scores.items()}

    vec, kw = scaled(vector), scaled(keyword)
    return {key: alpha * vec.get(key, 0.0) + (1 - alpha) * kw.get(key, 0.0) for key in set(vec) | set(kw)}
