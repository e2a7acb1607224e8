"""A local stand-in for the parts of Weaviate's REST and gRPC surface our adapter uses. Test-only.

It answers in Weaviate's wire formats (REST JSON, the v1 gRPC protos shipped in weaviate-client)
so the real `weaviate-client` talks to it unchanged, and it records every request so tests can
check what the adapter asked for (alpha, fusion, vector, tenant, filters). Its ranking is a
simple word-overlap + cosine fusion, NOT Weaviate's BM25: it proves request building and result
mapping, not Weaviate's search quality (tests/app/retrieval/test_weaviate_live.py does, against
a real server, when WEAVIATE_URL is set).
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
import uuid as uuid_lib
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from weaviate.proto.v1 import (
    base_pb2,
    batch_delete_pb2,
    batch_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

VERSION = "1.32.0"


class WeaviateState:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.schemas: dict[str, dict[str, Any]] = {}
        self.tenants: dict[str, set[str]] = {}
        self.objects: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}  # (collection, tenant) → uuid → obj
        self.searches: list[search_get_pb2.SearchRequest] = []
        self.batches: list[batch_pb2.BatchObjectsRequest] = []
        self.deletes: list[batch_delete_pb2.BatchDeleteRequest] = []
        self.rest: list[tuple[str, str, Any]] = []

    def bucket(self, collection: str, tenant: str) -> dict[str, dict[str, Any]]:
        multi = self.schemas.get(collection, {}).get("multiTenancyConfig", {}).get("enabled")
        if multi and tenant not in self.tenants.get(collection, set()):
            raise KeyError(f"tenant {tenant!r} not found")
        if not multi and tenant:
            raise KeyError("multi-tenancy is disabled but a tenant was given")
        return self.objects.setdefault((collection, tenant), {})


HNSW_DEFAULTS = {"cleanupIntervalSeconds": 300, "distance": "cosine", "dynamicEfMin": 100, "dynamicEfMax": 500,
                 "dynamicEfFactor": 8, "ef": -1, "efConstruction": 128, "filterStrategy": "sweeping",
                 "flatSearchCutoff": 40000, "maxConnections": 32, "skip": False,
                 "vectorCacheMaxObjects": 1000000000000}


def server_schema(body: dict[str, Any]) -> dict[str, Any]:
    """A created class as Weaviate 1.32 answers it: the request plus the server's defaults."""
    schema = json.loads(json.dumps(body))
    for prop in schema.get("properties", []):
        prop.setdefault("indexFilterable", True)
        prop.setdefault("indexSearchable", prop["dataType"][0] == "text")
        prop.setdefault("indexRangeFilters", False)
        if prop["dataType"][0] == "text":
            prop.setdefault("tokenization", "word")
    schema.setdefault("invertedIndexConfig", {})
    schema["invertedIndexConfig"].setdefault("bm25", {"b": 0.75, "k1": 1.2})
    schema["invertedIndexConfig"].setdefault("cleanupIntervalSeconds", 60)
    schema["invertedIndexConfig"].setdefault("stopwords", {"preset": "en", "additions": None, "removals": None})
    schema.setdefault("multiTenancyConfig", {"enabled": False})
    schema.setdefault("replicationConfig", {"factor": 1, "asyncEnabled": False,
                                            "deletionStrategy": "NoAutomatedResolution"})
    schema.setdefault("shardingConfig", {"virtualPerPhysical": 128, "desiredCount": 1, "actualCount": 1,
                                         "desiredVirtualCount": 128, "actualVirtualCount": 128, "key": "_id",
                                         "strategy": "hash", "function": "murmur3"})
    for vector in schema.get("vectorConfig", {}).values():
        vector.setdefault("vectorIndexType", "hnsw")
        vector["vectorIndexConfig"] = {**HNSW_DEFAULTS, **(vector.get("vectorIndexConfig") or {})}
    return schema


def _value(value: Any) -> properties_pb2.Value:
    if isinstance(value, bool):
        return properties_pb2.Value(bool_value=value)
    if isinstance(value, int):
        return properties_pb2.Value(int_value=value)
    if isinstance(value, float):
        return properties_pb2.Value(number_value=value)
    return properties_pb2.Value(text_value=str(value))


def _vector_of(obj: Any) -> list[float]:
    if obj.vector_bytes:
        return list(struct.unpack(f"<{len(obj.vector_bytes) // 4}f", obj.vector_bytes))
    if len(obj.vectors):
        raw = obj.vectors[0].vector_bytes
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(obj.vector)


def _matches(filters: base_pb2.Filters, object_id: str, properties: dict[str, Any]) -> bool:
    op = base_pb2.Filters.Operator
    if filters.operator in (op.OPERATOR_AND, op.OPERATOR_OR):
        results = [_matches(f, object_id, properties) for f in filters.filters]
        return all(results) if filters.operator == op.OPERATOR_AND else any(results)
    name = filters.target.property if filters.HasField("target") else (filters.on[0] if filters.on else "")
    actual = object_id if name == "_id" else properties.get(name)
    expected: Any = filters.value_text if filters.WhichOneof("test_value") == "value_text" else filters.value_int
    if filters.operator == op.OPERATOR_EQUAL:
        return actual == expected
    if filters.operator == op.OPERATOR_NOT_EQUAL:
        return actual != expected
    raise NotImplementedError(f"stand-in: filter operator {filters.operator}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


class Servicer(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, state: WeaviateState) -> None:
        self.state = state

    def Search(self, request: search_get_pb2.SearchRequest, context: Any) -> search_get_pb2.SearchReply:
        with self.state.lock:
            self.state.searches.append(request)
            try:
                bucket = self.state.bucket(request.collection, request.tenant)
            except KeyError as error:
                context.abort(grpc.StatusCode.NOT_FOUND, str(error))
            items = sorted(bucket.items())
            if request.HasField("filters"):
                items = [(k, v) for k, v in items if _matches(request.filters, k, v["properties"])]
            if request.after:
                items = [(k, v) for k, v in items if k > request.after]
            scores: dict[str, float] = {}
            if request.HasField("hybrid_search"):
                scores = self._hybrid(request.hybrid_search, items)
                items = sorted((i for i in items if i[0] in scores), key=lambda i: -scores[i[0]])
            limit = request.limit or 10
            results = []
            for object_id, obj in items[:limit]:
                metadata = search_get_pb2.MetadataResult(
                    id=object_id, id_as_bytes=uuid_lib.UUID(object_id).bytes,
                    creation_time_unix=obj["at"], creation_time_unix_present=True,
                    last_update_time_unix=obj["at"], last_update_time_unix_present=True)
                if object_id in scores:
                    metadata.score, metadata.score_present = scores[object_id], True
                if request.metadata.vector or len(request.metadata.vectors):
                    vector = obj["vector"]
                    metadata.vectors.append(base_pb2.Vectors(
                        name="default", type=base_pb2.Vectors.VECTOR_TYPE_SINGLE_FP32,
                        vector_bytes=struct.pack(f"<{len(vector)}f", *vector)))
                props = properties_pb2.Properties(fields={k: _value(v) for k, v in obj["properties"].items()})
                results.append(search_get_pb2.SearchResult(
                    properties=search_get_pb2.PropertiesResult(non_ref_props=props,
                                                               target_collection=request.collection),
                    metadata=metadata))
            return search_get_pb2.SearchReply(results=results, took=0.001)

    @staticmethod
    def _hybrid(hybrid: Any, items: list[tuple[str, dict[str, Any]]]) -> dict[str, float]:
        query = _vector_of(hybrid)
        words = _words(hybrid.query)
        vec: dict[str, float] = {}
        kw: dict[str, float] = {}
        for object_id, obj in items:
            vector = obj["vector"]
            if query and len(vector) == len(query):
                vec[object_id] = sum(a * b for a, b in zip(query, vector, strict=True))
            text = " ".join(str(v) for v in obj["properties"].values() if isinstance(v, str))
            overlap = len(words & _words(text))
            if overlap:
                kw[object_id] = float(overlap)

        def scaled(scores: dict[str, float]) -> dict[str, float]:
            if not scores:
                return {}
            low, high = min(scores.values()), max(scores.values())
            return {k: 1.0 if high == low else (v - low) / (high - low) for k, v in scores.items()}

        vs, ks = scaled(vec), scaled(kw)
        return {k: hybrid.alpha * vs.get(k, 0.0) + (1 - hybrid.alpha) * ks.get(k, 0.0) for k in set(vs) | set(ks)}

    def BatchObjects(self, request: batch_pb2.BatchObjectsRequest, context: Any) -> batch_pb2.BatchObjectsReply:
        errors = []
        with self.state.lock:
            self.state.batches.append(request)
            for index, obj in enumerate(request.objects):
                try:
                    bucket = self.state.bucket(obj.collection, obj.tenant)
                except KeyError as error:
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=str(error)))
                    continue
                properties = MessageToDict(obj.properties.non_ref_properties)
                if "ordinal" in properties:
                    properties["ordinal"] = int(properties["ordinal"])
                bucket[obj.uuid] = {"properties": properties, "vector": _vector_of(obj), "at": _now_ms()}
        return batch_pb2.BatchObjectsReply(errors=errors, took=0.001)

    def BatchDelete(self, request: batch_delete_pb2.BatchDeleteRequest, context: Any) -> Any:
        with self.state.lock:
            self.state.deletes.append(request)
            bucket = self.state.bucket(request.collection, request.tenant)
            gone = [k for k, v in bucket.items() if _matches(request.filters, k, v["properties"])]
            if not request.dry_run:
                for key in gone:
                    del bucket[key]
        return batch_delete_pb2.BatchDeleteReply(matches=len(gone), successful=len(gone), failed=0, took=0.001)

    def TenantsGet(self, request: tenants_pb2.TenantsGetRequest, context: Any) -> tenants_pb2.TenantsGetReply:
        with self.state.lock:
            names = sorted(self.state.tenants.get(request.collection, set()))
        return tenants_pb2.TenantsGetReply(tenants=[
            tenants_pb2.Tenant(name=name, activity_status=tenants_pb2.TENANT_ACTIVITY_STATUS_HOT) for name in names])


def rest_handler(state: WeaviateState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def _send(self, status: int, body: Any = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
            return json.loads(raw) if raw else None

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            parts = [p for p in url.path.split("/") if p]
            body = self._body() if method in {"POST", "PUT", "PATCH"} else None
            with state.lock:
                state.rest.append((method, url.path, body))
                self._dispatch(method, parts, body, parse_qs(url.query))

        def _dispatch(self, method: str, parts: list[str], body: Any, query: dict[str, list[str]]) -> None:
            if parts == ["v1", "meta"]:
                return self._send(200, {"version": VERSION, "modules": {}, "hostname": "http://standin"})
            if parts[:2] == ["v1", ".well-known"]:  # ready/live; no openid-configuration: anonymous access
                return self._send(200, {}) if parts[2:] in (["ready"], ["live"]) else self._send(404, None)
            if parts == ["v1", "schema"] and method == "POST":
                body = server_schema(body)
                state.schemas[body["class"]] = body
                state.tenants.setdefault(body["class"], set())
                return self._send(200, body)
            if parts[:2] == ["v1", "schema"] and len(parts) == 3 and method == "GET":
                schema = state.schemas.get(parts[2])
                return self._send(200, schema) if schema else self._send(404, {"error": [{"message": "not found"}]})
            if parts[:2] == ["v1", "schema"] and len(parts) == 4 and parts[3] == "tenants":
                if method == "POST":
                    state.tenants.setdefault(parts[2], set()).update(t["name"] for t in body)
                    return self._send(200, body)
                return self._send(200, [{"name": n, "activityStatus": "HOT"} for n in state.tenants.get(parts[2], ())])
            if parts == ["v1", "objects"] and method == "POST":
                return self._put_object(body["class"], body.get("id") or str(uuid_lib.uuid4()), body)
            if parts[:2] == ["v1", "objects"] and len(parts) == 4:
                if method == "PUT":
                    return self._put_object(parts[2], parts[3], body)
                if method == "DELETE":
                    tenant = query.get("tenant", [""])[0]
                    gone = state.bucket(parts[2], tenant).pop(parts[3], None)
                    return self._send(204) if gone else self._send(404, {"error": [{"message": "not found"}]})
            return self._send(404, {"error": [{"message": f"stand-in: no route {method} /{'/'.join(parts)}"}]})

        def _put_object(self, collection: str, object_id: str, body: dict[str, Any]) -> None:
            try:
                bucket = state.bucket(collection, body.get("tenant") or "")
            except KeyError as error:
                return self._send(422, {"error": [{"message": str(error)}]})
            vector = body.get("vector") or next(iter((body.get("vectors") or {}).values()), None) or []
            bucket[object_id] = {"properties": body.get("properties") or {}, "vector": list(vector), "at": _now_ms()}
            return self._send(200, {**body, "id": object_id})

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler


@contextmanager
def weaviate_standin() -> Iterator[tuple[WeaviateState, str, str]]:
    """(state, http URL, gRPC URL) of a running stand-in."""
    state = WeaviateState()
    http = ThreadingHTTPServer(("127.0.0.1", 0), rest_handler(state))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    weaviate_pb2_grpc.add_WeaviateServicer_to_server(Servicer(state), server)
    checker = health.HealthServicer()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield state, f"http://127.0.0.1:{http.server_address[1]}", f"http://127.0.0.1:{port}"
    finally:
        server.stop(0)
        http.shutdown()
        http.server_close()
