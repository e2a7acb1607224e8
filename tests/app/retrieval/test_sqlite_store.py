from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from retrieval.ingest import ingest_paths, search
from retrieval.sqlite_store import SQLiteKnowledgeStore, fts_query
from retrieval.store import EmbedderMismatch, relative_score_fusion
from tests.app.retrieval.helpers import HashingEmbedder

KNOWLEDGE = Path(__file__).resolve().parents[3] / "knowledge"


@pytest.fixture
def store(tmp_path: Path) -> SQLiteKnowledgeStore:
    store = SQLiteKnowledgeStore(tmp_path / "kb.db")
    yield store
    store.close()


def test_ingest_is_idempotent_and_replaces_changed_documents(tmp_path: Path, store: SQLiteKnowledgeStore) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\n## One\nReturns within thirty days are free.\n")
    (folder / "b.md").write_text("# Beta\n\nPayments by card or PayPal are accepted here.\n")
    embedder = HashingEmbedder()
    first = ingest_paths(store, embedder, [folder])
    assert (sorted(first.added), first.updated, first.unchanged) == (["a", "b"], [], [])
    again = ingest_paths(store, embedder, [folder])
    assert (again.added, again.updated, sorted(again.unchanged), again.chunks) == ([], [], ["a", "b"], 0)
    (folder / "a.md").write_text("# Alpha\n\n## One\nReturns within sixty days are free.\n")
    changed = ingest_paths(store, embedder, [folder])
    assert changed.updated == ["a"] and changed.unchanged == ["b"]
    info = store.document("a")
    assert info is not None and info.version == 2 and info.chunks == 1
    texts = [hit.text for hit in search(store, embedder, "returns days", k=5)]
    assert any("sixty" in t for t in texts) and not any("thirty" in t for t in texts)


def test_duplicate_doc_ids_and_bad_files_are_reported_not_fatal(tmp_path: Path,
                                                                store: SQLiteKnowledgeStore) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "same.md").write_text("# One\ntext one here")
    (tmp_path / "y" / "same.txt").write_text("text two here")
    (tmp_path / "x" / "broken.pdf").write_bytes(b"not a pdf")
    report = ingest_paths(store, HashingEmbedder(), [tmp_path])
    assert report.added == ["same"]
    assert len(report.failed) == 2 and any("same doc_id" in f for f in report.failed)


def test_delete_removes_document_and_its_chunks(tmp_path: Path, store: SQLiteKnowledgeStore) -> None:
    (tmp_path / "a.md").write_text("# A\nWarranty lasts two years on every product we sell.")
    ingest_paths(store, HashingEmbedder(), [tmp_path])
    assert store.delete_document("a") is True
    assert store.delete_document("a") is False
    assert store.documents() == []
    assert search(store, HashingEmbedder(), "warranty", k=5) == []


def test_a_store_refuses_queries_from_another_embedder(tmp_path: Path, store: SQLiteKnowledgeStore) -> None:
    (tmp_path / "a.md").write_text("# A\nsome text for the index")
    ingest_paths(store, HashingEmbedder("test:one"), [tmp_path])
    with pytest.raises(EmbedderMismatch, match="test:one"):
        search(store, HashingEmbedder("test:two"), "text")
    with pytest.raises(EmbedderMismatch):
        ingest_paths(store, HashingEmbedder("test:two"), [tmp_path])


def test_hybrid_search_over_the_help_centre(store: SQLiteKnowledgeStore) -> None:
    embedder = HashingEmbedder()
    ingest_paths(store, embedder, [KNOWLEDGE])
    hits = search(store, embedder, "Bizum PayPal Apple Pay", k=5)
    assert hits[0].doc_id == "payment-methods"
    assert hits[0].score == max(h.score for h in hits) and 0 <= hits[-1].score <= 1
    assert all(-1 <= h.vector_score <= 1 for h in hits)
    keyword_only = store.search("Bizum", embedder.embed_queries(["Bizum"])[0], k=3, alpha=0.0)
    assert keyword_only and all("bizum" in h.text.lower() for h in keyword_only)


@pytest.mark.parametrize("hostile", ['"', "NEAR(a b)", "a AND OR NOT", "title_path:x*", "') DROP TABLE kb_chunks;--",
                                     "*", "^", "💥" * 500, "", "   ", "x" * 10_000])
def test_hostile_queries_never_reach_fts_syntax(store: SQLiteKnowledgeStore, tmp_path: Path, hostile: str) -> None:
    (tmp_path / "a.md").write_text("# A\nsome text about drop tables and title paths")
    embedder = HashingEmbedder()
    ingest_paths(store, embedder, [tmp_path])
    search(store, embedder, hostile, k=3)  # no sqlite3.OperationalError
    assert store.document("a") is not None


def test_fts_query_quotes_every_word_and_drops_stopwords() -> None:
    assert fts_query("How do I return my *headphones*?") == '"return" OR "headphones"'
    assert fts_query("the of and") is None


def test_index_changes_made_by_another_process_are_seen(tmp_path: Path) -> None:
    path = tmp_path / "kb.db"
    reader = SQLiteKnowledgeStore(path)
    writer = SQLiteKnowledgeStore(path)
    embedder = HashingEmbedder()
    (tmp_path / "a.md").write_text("# A\nfirst document about invoices")
    ingest_paths(writer, embedder, [tmp_path / "a.md"])
    assert [h.doc_id for h in search(reader, embedder, "invoices")] == ["a"]
    (tmp_path / "b.md").write_text("# B\nsecond document about invoices and VAT")
    ingest_paths(writer, embedder, [tmp_path / "b.md"])
    assert {h.doc_id for h in search(reader, embedder, "invoices VAT")} == {"a", "b"}
    reader.close()
    writer.close()


def test_failed_write_leaves_the_previous_version(tmp_path: Path, store: SQLiteKnowledgeStore) -> None:
    (tmp_path / "a.md").write_text("# A\noriginal words here")
    embedder = HashingEmbedder()
    ingest_paths(store, embedder, [tmp_path])
    from retrieval.chunking import chunk_document
    from retrieval.documents import read_document

    (tmp_path / "a.md").write_text("# A\nnew words here")
    doc = read_document(tmp_path / "a.md")
    with pytest.raises(ValueError):
        store.replace_document(doc, chunk_document(doc), np.zeros((0, 64), dtype=np.float32), embedder.name)
    info = store.document("a")
    assert info is not None and info.version == 1
    conn = sqlite3.connect(tmp_path / "kb.db")
    assert conn.execute("SELECT text FROM kb_chunks").fetchall() == [("original words here",)]


def test_relative_score_fusion_scales_each_side() -> None:
    fused = relative_score_fusion({"a": 0.9, "b": 0.5}, {"b": 10.0, "c": 2.0}, alpha=0.5)
    assert fused == {"a": 0.5, "b": 0.5, "c": 0.0}
    assert relative_score_fusion({}, {"x": 3.0}, 0.7) == {"x": pytest.approx(0.3)}
