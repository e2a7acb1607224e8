"""The LLM path: the `openai` client against OpenAI or any OpenAI-compatible server (OPENAI_BASE_URL)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.answering import Answer, build_prompt, load_prompt, parse_llm_answer
from retrieval.store import Hit

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-4o-mini"


class LLMAnswerer:
    def __init__(self, client: Any, model: str, template: str, max_tokens: int = 400) -> None:
        self.client = client
        self.model = model
        self.template = template
        self.max_tokens = max_tokens

    @classmethod
    def from_env(cls) -> LLMAnswerer | None:
        """None when no OPENAI_API_KEY is set: the caller answers extractively."""
        key = os.environ.get("OPENAI_API_KEY")
        if not key:
            return None
        from openai import OpenAI

        client = OpenAI(api_key=key, base_url=os.environ.get("OPENAI_BASE_URL") or None,
                        timeout=float(os.environ.get("OPENAI_TIMEOUT", "20")),
                        max_retries=int(os.environ.get("OPENAI_MAX_RETRIES", "2")))
        prompt = os.environ.get("KB_PROMPT_FILE")
        return cls(client, os.environ.get("OPENAI_MODEL", DEFAULT_MODEL), load_prompt(Path(prompt) if prompt else None))

    def complete(self, prompt: str) -> str:
        """The model's reply to one prompt (temperature 0)."""
        answer = self.client.chat.completions.create(
            model=self.model, temperature=0, max_tokens=self.max_tokens,
            messages=[{"role": "user", "content": prompt}])
        return answer.choices[0].message.content or ""

    def answer(self, question: str, hits: Sequence[Hit], language: str = "en") -> Answer | None:
        """A grounded answer in the customer's language citing the (English) passages; None when the model
        finds no answer in them."""
        return parse_llm_answer(self.complete(build_prompt(self.template, question, hits, language)), hits)

    def rewrite(self, question: str, previous_questions: Sequence[str]) -> str:
        """A follow-up question made standalone with the customer's previous questions."""
        history = "\n".join(f"- {q}" for q in previous_questions[-3:])
        prompt = ("Rewrite the customer's last message as one standalone question, using their earlier "
                  "questions for context, in the language the customer wrote it in. Reply with the question "
                  f"only.\nEarlier questions:\n{history}\nLast message: {question}")
        rewritten = self.complete(prompt).strip().strip('"')
        return rewritten if 0 < len(rewritten) <= 500 else question
