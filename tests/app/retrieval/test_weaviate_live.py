"""The Weaviate adapter against a real Weaviate server: runs only when WEAVIATE_URL is set.

    WEAVIATE_URL=http://localhost:8080 [WEAVIATE_GRPC_URL=http://localhost:50051] make test-app

Not run in CI here (no Weaviate server can run on these machines); see README, "What was verified where".
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from retrieval.ingest import ingest_paths, search
from retrieval.weaviate_store import WeaviateKnowledgeStore
from tests.app.retrieval.helpers import HashingEmbedder

KNOWLEDGE = Path(__file__).resolve().parents[3] / "knowledge"

pytestmark = pytest.mark.skipif(not os.environ.get("WEAVIATE_URL"), reason="WEAVIATE_URL not set")


@pytest.mark.parametrize("tenant", ["", "PNID-live"])
def test_real_weaviate_round_trip(tenant: str) -> None:
    name = f"KbTest{uuid.uuid4().hex[:8]}"
    store = WeaviateKnowledgeStore.connect(os.environ["WEAVIATE_URL"], os.environ.get("WEAVIATE_API_KEY", ""), name,
                                           tenant, os.environ.get("WEAVIATE_GRPC_URL", ""))
    try:
        embedder = HashingEmbedder()
        report = ingest_paths(store, embedder, [KNOWLEDGE])
        assert len(report.added) >= 25
        hits = search(store, embedder, "Bizum PayPal Apple Pay", k=5, alpha=0.5)
        assert "payment-methods" in [h.doc_id for h in hits]
        assert ingest_paths(store, embedder, [KNOWLEDGE]).unchanged == sorted(report.added)
        assert store.delete_document("payment-methods") is True
        assert "payment-methods" not in [h.doc_id for h in search(store, embedder, "Bizum PayPal", k=5)]
    finally:
        store.client.collections.delete([name, f"{name}Documents"])
        store.close()
