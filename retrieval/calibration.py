"""`kb calibrate`: the relevance gate's threshold from a labelled set, so it can be checked on another.

The gate answers when the best chunk's cosine reaches KB_MIN_SIMILARITY. Calibration takes the
threshold that refuses the most unanswerable questions while refusing at most `max_false_refusal` of
the answerable ones. `make test-kb` calibrates on each help centre and reports the threshold on the
other one (eval/kb_questions*.yml for Voltbay, eval/fitnord_questions.yml for a gym chain).

Other no-answer signals were measured the same way, calibrated on one corpus and scored on the other
(bench/README.md, "Relevance gate"): the BM25 keyword lift, the best chunk's margin over the next
nine, the gap to the second, a z-score over all chunks, and a logistic combination of them. None
transferred better than the cosine alone, so the gate is the cosine alone. No reranker ships its
weights in a package that runs here without torch, so none was tried. With an LLM configured, its
"not in the passages" answer is a second gate after this one (retrieval/answering.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from retrieval.embedders import Embedder
from retrieval.evaluation import Question
from retrieval.store import KnowledgeStore, check_embedder

MAX_FALSE_REFUSAL = 0.10


@dataclass(frozen=True)
class Calibration:
    threshold: float
    refusal_rate: float  # of the unanswerable questions, at this threshold
    false_refusal_rate: float  # of the answerable ones
    answerable: int
    unanswerable: int


def best_cosines(store: KnowledgeStore, embedder: Embedder, questions: Sequence[Question],
                 alpha: float) -> list[tuple[Question, float]]:
    """Each question with the cosine of its first hit, which is what the gate compares (is_relevant)."""
    check_embedder(store.embedder_name(), embedder.name)
    vectors = embedder.embed_queries([q.question for q in questions])
    scored = []
    for question, vector in zip(questions, vectors, strict=True):
        hits = store.search(question.question, vector, k=10, alpha=alpha)
        scored.append((question, hits[0].vector_score if hits else -1.0))
    return scored


def calibrate(scored: Sequence[tuple[Question, float]], max_false_refusal: float = MAX_FALSE_REFUSAL) -> Calibration:
    """The threshold with the highest refusal of unanswerable questions whose false refusal stays within
    `max_false_refusal`; among equals, the lowest (it refuses fewest answerable questions)."""
    answerable = [score for question, score in scored if question.doc_id is not None]
    unanswerable = [score for question, score in scored if question.doc_id is None]
    if not answerable or not unanswerable:
        raise ValueError("calibration needs answerable and unanswerable questions (doc_id: null)")
    best: Calibration | None = None
    for threshold in sorted({score for _, score in scored}):
        false_refusal = sum(s < threshold for s in answerable) / len(answerable)
        if false_refusal > max_false_refusal:
            break  # higher thresholds refuse more answerable questions still
        refusal = sum(s < threshold for s in unanswerable) / len(unanswerable)
        if best is None or refusal > best.refusal_rate:
            best = Calibration(round(threshold, 4), refusal, false_refusal, len(answerable), len(unanswerable))
    assert best is not None  # the lowest score refuses nothing: false refusal 0
    return best
