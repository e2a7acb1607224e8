"""Answering knowledge questions from the help centre (retrieval/), with sources, or honestly not at all."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions import runtime
from retrieval.service import KnowledgeReply

logger = logging.getLogger(__name__)

ANSWER_MODE_SLOT = "kb_answer_mode"
ANSWERED_MODES = frozenset({"llm", "extractive"})  # kb_answer_mode values of an actual answer
PREVIOUS_QUESTIONS = 3
# The customer's responses, by answer mode (domain/knowledge.yml, in their language). The no-answer one
# offers a person, accepted or declined like the bot's other offers (data/rules/knowledge.yml).
RESPONSES = {"llm": "utter_kb_answer", "extractive": "utter_kb_passage", "no_answer": "utter_kb_no_answer"}


def previous_user_texts(tracker: Tracker, limit: int = PREVIOUS_QUESTIONS) -> list[str]:
    """The customer's messages before the current one, oldest first."""
    texts = [str(e.get("text") or "") for e in tracker.events if e.get("event") == "user"]
    return [t for t in texts[:-1] if t.strip() and not t.startswith("/")][-limit:]


async def knowledge_reply(tracker: Tracker) -> KnowledgeReply | None:
    """Search and answer in a thread (embedding and the LLM block); None when the knowledge base failed."""
    question = str(tracker.latest_message.get("text") or "")
    if not question.strip() or question.startswith("/"):
        return None
    language = str(tracker.get_slot("language") or "en")
    try:
        kb = runtime.knowledge_base()
        return await asyncio.to_thread(kb.reply, question, previous_user_texts(tracker), language)
    except Exception:  # index missing, Weaviate down, …: the customer gets an honest answer, we get a traceback
        logger.exception("knowledge base unavailable")
        return None


def utter_reply(dispatcher: CollectingDispatcher, reply: KnowledgeReply) -> None:
    answer = reply.answer
    dispatcher.utter_message(response=RESPONSES[answer.mode], answer=answer.body, sources=answer.source_titles(),
                             knowledge=reply.metadata())


class ActionAnswerQuestion(Action):
    """Out-of-scope and FAQ-miss questions: a grounded, cited answer, or "I don't know" + a person."""

    def name(self) -> str:
        return "action_answer_question"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> list[EventType]:
        reply = await knowledge_reply(tracker)
        if reply is None:
            dispatcher.utter_message(response=RESPONSES["no_answer"],
                                     knowledge={"answer_mode": "unavailable", "query": None, "doc_ids": []})
            return [SlotSet(ANSWER_MODE_SLOT, "no_answer")]
        utter_reply(dispatcher, reply)
        return [SlotSet(ANSWER_MODE_SLOT, reply.answer.mode)]


def answered(reply: KnowledgeReply | None) -> bool:
    return reply is not None and reply.answer.mode in ANSWERED_MODES


def knowledge_metadata(event: dict[str, Any]) -> dict[str, Any]:
    metadata = event.get("metadata") or {}
    knowledge = metadata.get("knowledge") if isinstance(metadata, dict) else None
    return knowledge if isinstance(knowledge, dict) else {}
