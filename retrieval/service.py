"""One call for the action server and the console: question (+ history) → answer + why."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from retrieval.answering import Answer, extractive_answer, is_followup, is_relevant, no_answer, rewrite_followup
from retrieval.embedders import Embedder, embedder_from_env
from retrieval.ingest import search
from retrieval.llm import LLMAnswerer
from retrieval.settings import KBSettings, open_store
from retrieval.store import KnowledgeStore

logger = logging.getLogger(__name__)

MAX_QUESTION_CHARS = 1000  # a WhatsApp message can be 4096; a question is never that long
K = 5


@dataclass(frozen=True)
class KnowledgeReply:
    answer: Answer
    query: str  # what was searched (the rewritten question)
    hits: list[Any]

    def metadata(self) -> dict[str, Any]:
        """Attached to the bot's message: the console and analytics show why the bot said it."""
        return {
            "query": self.query,
            "answer_mode": self.answer.mode,
            "doc_ids": [hit.doc_id for hit in self.hits],
            "scores": [round(hit.score, 4) for hit in self.hits],
            "similarities": [round(hit.vector_score, 4) for hit in self.hits],
            "sources": [{"doc_id": hit.doc_id, "title": hit.title, "section": hit.title_path}
                        for hit in self.answer.sources],
        }


class KnowledgeBase:
    def __init__(self, store: KnowledgeStore, embedder: Embedder, settings: KBSettings,
                 llm: LLMAnswerer | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.llm = llm

    @classmethod
    def from_env(cls) -> KnowledgeBase:
        settings = KBSettings.from_env()
        return cls(open_store(settings), embedder_from_env(), settings, LLMAnswerer.from_env())

    def reply(self, question: str, previous_questions: Sequence[str] = (), language: str = "en") -> KnowledgeReply:
        """The help centre's answer to `question`; `language` is the customer's, for an LLM's answer (the
        search is cross-lingual: the embeddings are multilingual)."""
        question = question.strip()[:MAX_QUESTION_CHARS]
        query = question
        if previous_questions and is_followup(question):
            query = rewrite_followup(question, previous_questions)
            if self.llm is not None:
                try:
                    query = self.llm.rewrite(question, previous_questions)
                except Exception:  # the heuristic rewrite is good enough to go on with
                    logger.exception("LLM rewrite failed; using the heuristic one")
        hits = search(self.store, self.embedder, query, k=K, alpha=self.settings.alpha)
        if not is_relevant(hits, self.settings.min_similarity, self.settings.min_relevance):
            return KnowledgeReply(no_answer(), query, hits)
        if self.llm is None:
            return KnowledgeReply(extractive_answer(hits), query, hits)
        try:
            answer = self.llm.answer(query, hits, language)
        except Exception:
            logger.exception("LLM answer failed; answering extractively")
            return KnowledgeReply(extractive_answer(hits), query, hits)
        return KnowledgeReply(answer or no_answer(), query, hits)
