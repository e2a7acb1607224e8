"""The Weaviate backend (weaviate-client v4): the same interface as the embedded store.

- Chunks live in one collection with self-provided vectors; ids are `generate_uuid5` of the
  chunk id and document version, so re-importing the same content writes the same objects.
- Document records (version, hash, embedder) live in a second collection, `<name>Documents`.
- Search is `query.hybrid` with an explicit alpha and relative-score fusion (the embedded
  store fuses the same way); the cosine of each hit is computed here from its returned vector,
  so the relevance gate reads the same number on both backends.
- Optional multi-tenancy: one tenant per business number/account (KB_TENANT).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

import numpy as np

from retrieval.chunking import Chunk
from retrieval.documents import Document
from retrieval.store import DEFAULT_ALPHA, DocumentInfo, Hit

BATCH_SIZE = 200


class WeaviateError(RuntimeError):
    """Weaviate refused some objects of an import."""


def chunk_uuid(chunk: Chunk) -> str:
    from weaviate.util import generate_uuid5

    return str(generate_uuid5(f"{chunk.chunk_id}@{chunk.doc_hash}"))


def document_uuid(doc_id: str) -> str:
    from weaviate.util import generate_uuid5

    return str(generate_uuid5(f"document:{doc_id}"))


def chunk_properties(chunk: Chunk) -> dict[str, Any]:
    return {"chunk_id": chunk.chunk_id, "doc_id": chunk.doc_id, "ordinal": chunk.ordinal, "title": chunk.title,
            "title_path": chunk.title_path, "text": chunk.text, "source": chunk.source, "doc_hash": chunk.doc_hash}


def hit_from_object(properties: dict[str, Any], fused: float | None, vector: Any, query: np.ndarray) -> Hit:
    """A Weaviate result object → Hit; the cosine is computed from the object's vector."""
    if isinstance(vector, dict):
        vector = vector.get("default") or next(iter(vector.values()), None)
    cosine = float(np.dot(np.asarray(vector, dtype=np.float32), query)) if vector is not None and len(vector) else 0.0
    return Hit(chunk_id=str(properties.get("chunk_id", "")), doc_id=str(properties.get("doc_id", "")),
               title=str(properties.get("title", "")), title_path=str(properties.get("title_path", "")),
               text=str(properties.get("text", "")), source=str(properties.get("source", "")),
               score=float(fused or 0.0), vector_score=cosine, keyword_score=0.0)


class WeaviateKnowledgeStore:
    def __init__(self, client: Any, collection: str, tenant: str = "") -> None:
        self.client = client
        self.name = collection
        self.tenant = tenant
        self._embedder: str | None = None
        self._ensure_collections()

    @classmethod
    def connect(cls, url: str, api_key: str, collection: str, tenant: str = "", grpc_url: str = "",
                skip_init_checks: bool = False) -> WeaviateKnowledgeStore:
        import weaviate
        from weaviate.classes.init import Auth

        http = urlparse(url)
        grpc = urlparse(grpc_url) if grpc_url else None
        secure = http.scheme == "https"
        client = weaviate.connect_to_custom(
            http_host=http.hostname or "localhost", http_port=http.port or (443 if secure else 8080),
            http_secure=secure,
            grpc_host=(grpc.hostname if grpc else None) or http.hostname or "localhost",
            grpc_port=(grpc.port if grpc else None) or 50051,
            grpc_secure=(grpc.scheme == "https") if grpc else secure,
            auth_credentials=Auth.api_key(api_key) if api_key else None,
            skip_init_checks=skip_init_checks,
        )
        return cls(client, collection, tenant)

    # --- schema -----------------------------------------------------------------
    def _ensure_collections(self) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization

        tenancy = Configure.multi_tenancy(enabled=True, auto_tenant_creation=True) if self.tenant else None
        if not self.client.collections.exists(self.name):
            text = [Property(name=name, data_type=DataType.TEXT) for name in ("title", "title_path", "text")]
            keys = [Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD,
                             skip_vectorization=True) for name in ("chunk_id", "doc_id", "source", "doc_hash")]
            self.client.collections.create(
                self.name, properties=text + keys + [Property(name="ordinal", data_type=DataType.INT)],
                vector_config=Configure.Vectors.self_provided(), multi_tenancy_config=tenancy)
        if not self.client.collections.exists(self._documents_name):
            fields = ("doc_id", "title", "source", "content_hash", "embedder")
            self.client.collections.create(
                self._documents_name,
                properties=[Property(name=name, data_type=DataType.TEXT, tokenization=Tokenization.FIELD)
                            for name in fields]
                + [Property(name="version", data_type=DataType.INT), Property(name="chunks", data_type=DataType.INT),
                   Property(name="updated_at", data_type=DataType.NUMBER)],
                vector_config=Configure.Vectors.self_provided(), multi_tenancy_config=tenancy)
        if self.tenant:
            from weaviate.classes.tenants import Tenant

            for name in (self.name, self._documents_name):
                collection = self.client.collections.get(name)
                if self.tenant not in collection.tenants.get():
                    collection.tenants.create([Tenant(name=self.tenant)])

    @property
    def _documents_name(self) -> str:
        return f"{self.name}Documents"

    def _collection(self, name: str) -> Any:
        collection = self.client.collections.get(name)
        return collection.with_tenant(self.tenant) if self.tenant else collection

    @property
    def chunks(self) -> Any:
        return self._collection(self.name)

    @property
    def docs(self) -> Any:
        return self._collection(self._documents_name)

    # --- documents ----------------------------------------------------------------
    @staticmethod
    def _info(properties: dict[str, Any]) -> DocumentInfo:
        return DocumentInfo(doc_id=str(properties["doc_id"]), title=str(properties.get("title", "")),
                            source=str(properties.get("source", "")),
                            content_hash=str(properties.get("content_hash", "")),
                            version=int(properties.get("version") or 0), chunks=int(properties.get("chunks") or 0),
                            updated_at=float(properties.get("updated_at") or 0.0))

    def embedder_name(self) -> str | None:
        # Checked before every search: ask the server only until an index has one (it never changes after).
        if self._embedder is None:
            result = self.docs.query.fetch_objects(limit=1, return_properties=["embedder"])
            self._embedder = str(result.objects[0].properties["embedder"]) if result.objects else None
        return self._embedder

    def documents(self) -> list[DocumentInfo]:
        infos = [self._info(obj.properties) for obj in self.docs.iterator()]
        return sorted(infos, key=lambda info: info.doc_id)

    def document(self, doc_id: str) -> DocumentInfo | None:
        obj = self.docs.query.fetch_object_by_id(document_uuid(doc_id))
        return self._info(obj.properties) if obj is not None else None

    def replace_document(self, document: Document, chunks: Sequence[Chunk], vectors: np.ndarray,
                         embedder_name: str) -> DocumentInfo:
        """New chunks in first, then the old version's out: a search never sees the document missing."""
        from weaviate.classes.query import Filter

        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        previous = self.document(document.doc_id)
        collection = self.chunks
        with collection.batch.fixed_size(batch_size=BATCH_SIZE) as batch:
            for chunk, vector in zip(chunks, vectors, strict=True):
                batch.add_object(properties=chunk_properties(chunk), uuid=chunk_uuid(chunk),
                                 vector=[float(x) for x in vector])
        failed = collection.batch.failed_objects
        if failed:
            raise WeaviateError(f"{len(failed)} chunk(s) of {document.doc_id} refused: {failed[0].message}")
        collection.data.delete_many(where=Filter.by_property("doc_id").equal(document.doc_id)
                                    & Filter.by_property("doc_hash").not_equal(document.content_hash))
        info = DocumentInfo(document.doc_id, document.title, document.source, document.content_hash,
                            (previous.version + 1) if previous else 1, len(chunks), time.time())
        properties = {"doc_id": info.doc_id, "title": info.title, "source": info.source,
                      "content_hash": info.content_hash, "embedder": embedder_name, "version": info.version,
                      "chunks": info.chunks, "updated_at": info.updated_at}
        if previous is None:
            self.docs.data.insert(properties, uuid=document_uuid(document.doc_id))
        else:
            self.docs.data.replace(uuid=document_uuid(document.doc_id), properties=properties)
        return info

    def delete_document(self, doc_id: str) -> bool:
        from weaviate.classes.query import Filter

        existed = self.document(doc_id) is not None
        self.chunks.data.delete_many(where=Filter.by_property("doc_id").equal(doc_id))
        if existed:
            self.docs.data.delete_by_id(document_uuid(doc_id))
        return existed

    # --- search -------------------------------------------------------------------
    def search(self, text: str, vector: np.ndarray, k: int = 5, alpha: float = DEFAULT_ALPHA) -> list[Hit]:
        from weaviate.classes.query import HybridFusion, MetadataQuery

        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        result = self.chunks.query.hybrid(
            query=text or None, vector=[float(x) for x in query], alpha=alpha, limit=k,
            fusion_type=HybridFusion.RELATIVE_SCORE, include_vector=True,
            return_metadata=MetadataQuery(score=True))
        return [hit_from_object(obj.properties, obj.metadata.score, obj.vector, query) for obj in result.objects]

    def close(self) -> None:
        self.client.close()
