"""The embedded knowledge store: one SQLite file (FTS5 for BM25) + vectors searched in memory with numpy.

Why this and not a vector database: a help centre is thousands of chunks, not millions. An
exact dot product over every vector takes ~1 ms at 20k chunks on one core (no approximate
index, so no recall lost), FTS5 ships with Python's sqlite3, and the whole knowledge base is
one file that backs up with `cp`. bench/kb_hybrid.py measures it against LanceDB.

Vectors are stored as float32 blobs and loaded into one matrix on first search; the matrix is
reloaded when another process (`kb ingest`) changed the file (generation counter in kb_meta).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.chunking import Chunk
from retrieval.documents import Document
from retrieval.store import CANDIDATES, DEFAULT_ALPHA, DocumentInfo, Hit, check_embedder, relative_score_fusion

SCHEMA = """
CREATE TABLE IF NOT EXISTS kb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kb_documents (
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, source TEXT NOT NULL, content_hash TEXT NOT NULL,
    version INTEGER NOT NULL, chunks INTEGER NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS kb_chunks (
    id INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    title TEXT NOT NULL, title_path TEXT NOT NULL, text TEXT NOT NULL, source TEXT NOT NULL,
    vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS ix_kb_chunks_doc ON kb_chunks (doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS kb_fts USING fts5(
    title_path, text, content='kb_chunks', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS kb_chunks_ai AFTER INSERT ON kb_chunks BEGIN
    INSERT INTO kb_fts(rowid, title_path, text) VALUES (new.id, new.title_path, new.text); END;
CREATE TRIGGER IF NOT EXISTS kb_chunks_ad AFTER DELETE ON kb_chunks BEGIN
    INSERT INTO kb_fts(kb_fts, rowid, title_path, text) VALUES ('delete', old.id, old.title_path, old.text); END;
"""

WORD = re.compile(r"\w+", re.UNICODE)
# Words that match nearly every chunk: they only slow BM25 down and blur its ranking.
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "did", "for", "from", "has",
    "have", "how", "i", "if", "in", "is", "it", "its", "me", "my", "no", "not", "of", "on", "or", "our", "so",
    "that", "the", "their", "them", "there", "this", "to", "was", "we", "what", "when", "where", "which", "who",
    "why", "will", "with", "would", "you", "your", "el", "la", "los", "las", "de", "del", "y", "o", "en", "un",
    "una", "por", "para", "que", "con", "es", "se", "mi",
})
MAX_QUERY_WORDS = 32


def fts_query(text: str) -> str | None:
    """A safe FTS5 query from free text: each word quoted (no FTS syntax gets through), OR-ed."""
    words: list[str] = []
    for word in WORD.findall(text.lower()):
        if word not in STOPWORDS and word not in words and len(word) <= 40:
            words.append(word)
    if not words:
        return None
    return " OR ".join(f'"{word}"' for word in words[:MAX_QUERY_WORDS])


class SQLiteKnowledgeStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._generation = -1
        self._ids: list[str] = []
        self._rowids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, 0), dtype=np.float32)

    # --- metadata -----------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM kb_meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def embedder_name(self) -> str | None:
        with self._lock:
            return self._meta("embedder")

    def documents(self) -> list[DocumentInfo]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT doc_id, title, source, content_hash, version, chunks, updated_at FROM kb_documents "
                "ORDER BY doc_id").fetchall()
        return [DocumentInfo(*row) for row in rows]

    def document(self, doc_id: str) -> DocumentInfo | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT doc_id, title, source, content_hash, version, chunks, updated_at FROM kb_documents "
                "WHERE doc_id = ?", (doc_id,)).fetchone()
        return DocumentInfo(*row) if row else None

    # --- writing --------------------------------------------------------------
    def replace_document(self, document: Document, chunks: Sequence[Chunk], vectors: np.ndarray,
                         embedder_name: str) -> DocumentInfo:
        """The document's old chunks out, the new ones in: one transaction."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vectors = np.asarray(vectors, dtype=np.float32)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                check_embedder(self._meta("embedder"), embedder_name)  # checked again inside the write lock
                previous = self._conn.execute("SELECT version FROM kb_documents WHERE doc_id = ?",
                                              (document.doc_id,)).fetchone()
                version = (previous[0] + 1) if previous else 1
                self._conn.execute("DELETE FROM kb_chunks WHERE doc_id = ?", (document.doc_id,))
                self._conn.executemany(
                    "INSERT INTO kb_chunks (chunk_id, doc_id, ordinal, title, title_path, text, source, vector) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(c.chunk_id, c.doc_id, c.ordinal, c.title, c.title_path, c.text, c.source, v.tobytes())
                     for c, v in zip(chunks, vectors, strict=True)])
                now = time.time()
                self._conn.execute(
                    "INSERT OR REPLACE INTO kb_documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (document.doc_id, document.title, document.source, document.content_hash, version, len(chunks),
                     now))
                self._conn.execute("INSERT OR IGNORE INTO kb_meta VALUES ('embedder', ?)", (embedder_name,))
                self._conn.execute("INSERT OR IGNORE INTO kb_meta VALUES ('dim', ?)", (str(vectors.shape[1]),))
                self._bump()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return DocumentInfo(document.doc_id, document.title, document.source, document.content_hash, version,
                            len(chunks), now)

    def delete_document(self, doc_id: str) -> bool:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM kb_chunks WHERE doc_id = ?", (doc_id,))
                gone = self._conn.execute("DELETE FROM kb_documents WHERE doc_id = ?", (doc_id,)).rowcount
                self._bump()
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return bool(gone)

    def _bump(self) -> None:
        self._conn.execute("INSERT INTO kb_meta VALUES ('generation', '1') ON CONFLICT(key) DO UPDATE "
                           "SET value = CAST(value AS INTEGER) + 1")

    # --- searching ------------------------------------------------------------
    def _load_vectors(self) -> None:
        generation = int(self._meta("generation") or 0)
        if generation == self._generation:
            return
        rows = self._conn.execute("SELECT id, chunk_id, vector FROM kb_chunks ORDER BY id").fetchall()
        self._rowids = np.array([row[0] for row in rows], dtype=np.int64)
        self._ids = [row[1] for row in rows]
        dim = int(self._meta("dim") or 0)
        self._matrix = (np.frombuffer(b"".join(row[2] for row in rows), dtype=np.float32).reshape(len(rows), dim)
                        if rows else np.zeros((0, dim), dtype=np.float32))
        self._generation = generation

    def search(self, text: str, vector: np.ndarray, k: int = 5, alpha: float = DEFAULT_ALPHA) -> list[Hit]:
        if k <= 0:
            return []
        candidates = max(CANDIDATES, k)
        with self._lock:
            self._load_vectors()
            vector_scores: dict[int, float] = {}
            if len(self._rowids) and alpha > 0:
                scores = self._matrix @ np.asarray(vector, dtype=np.float32).reshape(-1)
                top = min(candidates, len(scores))
                best = np.argpartition(-scores, top - 1)[:top]
                vector_scores = {int(self._rowids[i]): float(scores[i]) for i in best}
            keyword_scores: dict[int, float] = {}
            query = fts_query(text)
            if query and alpha < 1:
                rows = self._conn.execute(
                    "SELECT rowid, -bm25(kb_fts, 2.0, 1.0) FROM kb_fts WHERE kb_fts MATCH ? "
                    "ORDER BY bm25(kb_fts, 2.0, 1.0) LIMIT ?", (query, candidates)).fetchall()
                keyword_scores = {int(rowid): float(score) for rowid, score in rows}
            fused = relative_score_fusion(vector_scores, keyword_scores, alpha)  # type: ignore[arg-type]
            ranked = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:k]
            if not ranked:
                return []
            missing = [rowid for rowid, _ in ranked if rowid not in vector_scores]
            if missing:  # keyword-only candidates still get their true cosine (the relevance gate reads it)
                positions = np.searchsorted(self._rowids, missing)
                cosines = self._matrix[positions] @ np.asarray(vector, dtype=np.float32).reshape(-1)
                vector_scores.update({rowid: float(c) for rowid, c in zip(missing, cosines, strict=True)})
            marks = ",".join("?" * len(ranked))
            rows = {row[0]: row for row in self._conn.execute(
                f"SELECT id, chunk_id, doc_id, title, title_path, text, source FROM kb_chunks WHERE id IN ({marks})",
                [rowid for rowid, _ in ranked])}
        return [Hit(chunk_id=rows[rowid][1], doc_id=rows[rowid][2], title=rows[rowid][3],
                    title_path=rows[rowid][4], text=rows[rowid][5], source=rows[rowid][6], score=score,
                    vector_score=vector_scores.get(rowid, 0.0), keyword_score=keyword_scores.get(rowid, 0.0))
                for rowid, score in ranked if rowid in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
