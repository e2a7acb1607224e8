"""`kb eval`: recall@1/@5, MRR and the refusal rate of unanswerable questions on a labelled set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from retrieval.answering import is_relevant
from retrieval.embedders import Embedder
from retrieval.store import KnowledgeStore, check_embedder

K = 10


@dataclass(frozen=True)
class Question:
    question: str
    doc_id: str | None  # None: nothing in the knowledge base answers it


@dataclass
class EvalResult:
    answerable: int = 0
    unanswerable: int = 0
    recall_at_1: float = 0.0
    recall_at_5: float = 0.0
    mrr: float = 0.0
    refusal_rate: float = 0.0  # unanswerable questions the relevance gate refused
    false_refusal_rate: float = 0.0  # answerable questions it refused
    misses: list[dict[str, Any]] = field(default_factory=list)
    top_similarity: dict[str, list[float]] = field(default_factory=lambda: {"answerable": [], "unanswerable": []})
    min_similarity: float = 0.0
    min_relevance: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in (
            "answerable", "unanswerable", "recall_at_1", "recall_at_5", "mrr", "refusal_rate", "false_refusal_rate",
            "min_similarity", "min_relevance", "misses", "top_similarity")}


def load_questions(path: Path) -> list[Question]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("questions"), list):
        raise ValueError(f"{path}: expected a mapping with a `questions:` list")
    questions = []
    for n, entry in enumerate(data["questions"], 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("question"), str) or not entry["question"].strip():
            raise ValueError(f"{path}: question {n} needs a non-empty `question:`")
        doc = entry.get("doc_id")
        if doc is not None and not isinstance(doc, str):
            raise ValueError(f"{path}: question {n}: `doc_id:` must be a document id or null")
        questions.append(Question(entry["question"], doc))
    return questions


def evaluate(store: KnowledgeStore, embedder: Embedder, questions: list[Question], alpha: float,
             min_similarity: float, min_relevance: float | None = None) -> EvalResult:
    check_embedder(store.embedder_name(), embedder.name)
    known = {doc.doc_id for doc in store.documents()}
    unknown = sorted({q.doc_id for q in questions if q.doc_id and q.doc_id not in known})
    if unknown:
        raise ValueError(f"the labelled set names documents not in the knowledge base: {', '.join(unknown)}")
    vectors = embedder.embed_queries([q.question for q in questions])
    result = EvalResult(min_similarity=min_similarity, min_relevance=min_relevance)
    hits1 = hits5 = refused = false_refused = 0
    reciprocal = 0.0
    for question, vector in zip(questions, vectors, strict=True):
        hits = store.search(question.question, vector, k=K, alpha=alpha)
        relevant = is_relevant(hits, min_similarity, min_relevance)
        top = hits[0].vector_score if hits else -1.0
        if question.doc_id is None:
            result.unanswerable += 1
            result.top_similarity["unanswerable"].append(round(top, 4))
            refused += not relevant
            if relevant:
                result.misses.append({"question": question.question, "expected": None, "got": hits[0].doc_id})
            continue
        result.answerable += 1
        result.top_similarity["answerable"].append(round(top, 4))
        false_refused += not relevant
        docs = [hit.doc_id for hit in hits]
        rank = docs.index(question.doc_id) + 1 if question.doc_id in docs else None
        hits1 += rank == 1
        hits5 += rank is not None and rank <= 5
        reciprocal += 1 / rank if rank else 0.0
        if rank != 1:
            result.misses.append({"question": question.question, "expected": question.doc_id, "rank": rank,
                                  "got": docs[:3]})
    if result.answerable:
        result.recall_at_1 = hits1 / result.answerable
        result.recall_at_5 = hits5 / result.answerable
        result.mrr = reciprocal / result.answerable
        result.false_refusal_rate = false_refused / result.answerable
    if result.unanswerable:
        result.refusal_rate = refused / result.unanswerable
    return result


def report_lines(result: EvalResult) -> list[str]:
    lines = [
        f"answerable questions: {result.answerable}   unanswerable: {result.unanswerable}",
        f"recall@1 {result.recall_at_1:.3f}   recall@5 {result.recall_at_5:.3f}   MRR@{K} {result.mrr:.3f}",
        f"refusal of unanswerable {result.refusal_rate:.3f}   answerable refused {result.false_refusal_rate:.3f}"
        f"   (gate: best chunk cosine >= {result.min_similarity}"
        + (f" or cosine + keyword evidence >= {result.min_relevance})" if result.min_relevance is not None else ")"),
    ]
    for miss in result.misses[:15]:
        lines.append(f"  miss: {miss}")
    return lines


def plot(result: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["recall@1", "recall@5", "MRR", "refusal"]
    values = [result.recall_at_1, result.recall_at_5, result.mrr, result.refusal_rate]
    left.bar(names, values, color=["#25d366", "#128c7e", "#075e54", "#34b7f1"])
    left.set_ylim(0, 1)
    left.axhline(0.9, color="grey", linestyle=":", linewidth=1)
    for x, value in enumerate(values):
        left.text(x, value + 0.02, f"{value:.2f}", ha="center")
    left.set_title("retrieval quality")
    right.hist(result.top_similarity["answerable"], bins=20, alpha=0.6, label="answerable")
    right.hist(result.top_similarity["unanswerable"], bins=20, alpha=0.6, label="unanswerable")
    right.axvline(result.min_similarity, color="red", linestyle="--", label="relevance gate")
    right.set_title("cosine of the best chunk")
    right.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
