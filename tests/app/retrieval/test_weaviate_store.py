"""The Weaviate adapter against a stand-in of Weaviate's REST + gRPC surface (request building, mapping).

What this proves: the real weaviate-client, driven by our adapter, sends what we intend (self-provided
vectors, uuid5 ids, explicit alpha, relative-score fusion, tenant, delete filters) and its answers map
back to the same Hits as the embedded store. Search quality of a real Weaviate is not tested here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from weaviate.proto.v1 import base_pb2, base_search_pb2

from retrieval.chunking import chunk_document
from retrieval.documents import read_document
from retrieval.ingest import ingest_paths, search
from retrieval.store import EmbedderMismatch
from retrieval.weaviate_store import WeaviateKnowledgeStore, chunk_uuid
from tests.app.retrieval.helpers import HashingEmbedder
from tests.app.retrieval.weaviate_standin import weaviate_standin

KNOWLEDGE = Path(__file__).resolve().parents[3] / "knowledge"


@pytest.fixture
def standin() -> Iterator[tuple[Any, str, str]]:
    with weaviate_standin() as running:
        yield running


def connect(standin: tuple[Any, str, str], tenant: str = "") -> WeaviateKnowledgeStore:
    _state, http, grpc_url = standin
    return WeaviateKnowledgeStore.connect(http, "", "Kb", tenant, grpc_url)


def test_collections_are_created_for_self_provided_vectors(standin) -> None:
    state, *_ = standin
    store = connect(standin)
    schema = state.schemas["Kb"]
    props = {p["name"]: p for p in schema["properties"]}
    assert {"doc_id", "chunk_id", "title", "title_path", "text", "source", "doc_hash", "ordinal"} <= set(props)
    assert props["doc_id"]["tokenization"] == "field"
    assert schema["vectorConfig"]["default"]["vectorizer"] == {"none": {}}
    assert "KbDocuments" in state.schemas
    store.close()


def test_ingest_search_update_delete_round_trip(standin, tmp_path: Path) -> None:
    state, *_ = standin
    store = connect(standin)
    embedder = HashingEmbedder()
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("payment-methods.md", "warranty.md", "refunds.md"):
        (docs / name).write_text((KNOWLEDGE / name).read_text())
    report = ingest_paths(store, embedder, [docs])
    assert sorted(report.added) == ["payment-methods", "refunds", "warranty"]

    batch = [o for request in state.batches for o in request.objects]
    document = read_document(docs / "warranty.md")
    expected = {chunk_uuid(c) for c in chunk_document(document)}
    assert expected <= {o.uuid for o in batch}
    assert all(len(o.vector_bytes) == 4 * embedder.dim or len(o.vectors) for o in batch)

    hits = search(store, embedder, "Bizum PayPal Apple Pay", k=3, alpha=0.35)
    request = state.searches[-1]
    assert request.collection == "Kb" and request.limit == 3
    assert request.hybrid_search.alpha == pytest.approx(0.35)
    assert request.hybrid_search.fusion_type == base_search_pb2.Hybrid.FUSION_TYPE_RELATIVE_SCORE
    assert hits[0].doc_id == "payment-methods" and hits[0].title == "Payment methods"
    query = embedder.embed_queries(["Bizum PayPal Apple Pay"])[0]
    payment_chunks = chunk_document(read_document(docs / "payment-methods.md"))
    chunk = next(c for c in payment_chunks if c.chunk_id == hits[0].chunk_id)
    assert hits[0].vector_score == pytest.approx(float(np.dot(embedder.embed_passages([chunk.embedding_text])[0],
                                                              query)), abs=1e-5)

    before = len(state.batches)
    assert ingest_paths(store, embedder, [docs]).unchanged == ["payment-methods", "refunds", "warranty"]
    assert len(state.batches) == before  # unchanged documents are not re-imported

    (docs / "refunds.md").write_text("# Refunds\n\nWe refund within 2 working days now.\n")
    assert ingest_paths(store, embedder, [docs]).updated == ["refunds"]
    delete = state.deletes[-1]
    assert delete.filters.operator == base_pb2.Filters.OPERATOR_AND
    info = store.document("refunds")
    assert info is not None and info.version == 2 and info.chunks == 1
    refund_texts = [o["properties"]["text"] for o in state.objects[("Kb", "")].values()
                    if o["properties"]["doc_id"] == "refunds"]
    assert refund_texts == ["We refund within 2 working days now."]

    assert store.delete_document("warranty") is True
    assert store.delete_document("warranty") is False
    assert [d.doc_id for d in store.documents()] == ["payment-methods", "refunds"]
    assert not any(o["properties"]["doc_id"] == "warranty" for o in state.objects[("Kb", "")].values())
    store.close()


def test_embedder_is_recorded_and_checked(standin, tmp_path: Path) -> None:
    store = connect(standin)
    (tmp_path / "a.md").write_text("# A\nsome words here")
    ingest_paths(store, HashingEmbedder("test:one"), [tmp_path])
    assert store.embedder_name() == "test:one"
    with pytest.raises(EmbedderMismatch):
        search(store, HashingEmbedder("test:two"), "words")
    store.close()


def test_multi_tenancy_one_tenant_per_business_number(standin, tmp_path: Path) -> None:
    state, *_ = standin
    (tmp_path / "a.md").write_text("# A\nopening hours of the shop")
    first = connect(standin, tenant="PNID-1")
    second = connect(standin, tenant="PNID-2")
    ingest_paths(first, HashingEmbedder(), [tmp_path])
    assert state.tenants["Kb"] == {"PNID-1", "PNID-2"}
    assert state.schemas["Kb"]["multiTenancyConfig"]["enabled"] is True
    assert all(o.tenant == "PNID-1" for request in state.batches for o in request.objects)
    assert [h.doc_id for h in search(first, HashingEmbedder(), "opening hours")] == ["a"]
    assert state.searches[-1].tenant == "PNID-1"
    assert search(second, HashingEmbedder(), "opening hours") == []
    first.close()
    second.close()


def test_uuid_is_uuid5_of_chunk_and_version(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\nwords")
    chunk = chunk_document(read_document(tmp_path / "a.md"))[0]
    value = uuid.UUID(chunk_uuid(chunk))
    assert value.version == 5 and chunk_uuid(chunk) == chunk_uuid(chunk)
