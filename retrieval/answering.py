"""Turning retrieved chunks into a WhatsApp answer. Pure functions: no model, no network.

- `is_relevant`: the gate. Nothing passes unless the best chunk is close enough to the question.
- `rewrite_followup`: "and for Spain?" → the previous question + the follow-up.
- `extractive_answer`: no LLM configured — the best passage, trimmed, with its source.
- `build_prompt` / `parse_llm_answer`: the LLM path; an answer must cite the sources it used,
  and the model's "not in the context" marker becomes an honest no-answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from languages import DEFAULT_LANGUAGE, ENGLISH_NAMES
from languages.text import plain_words
from retrieval.store import Hit

WHATSAPP_ANSWER_CHARS = 700  # comfortably one bubble; the full article is a tap away for the agent
NO_ANSWER_MARKER = "NO_ANSWER"
# A message that only makes sense after the previous question, in en, es, pt and de (accents removed).
FOLLOWUP_STARTS = ("and ", "what about", "how about", "also ", "what if", "same for", "and?",
                   "y ", "y?", "y si", "y para", "y en", "y a ", "que tal", "tambien", "lo mismo",
                   "e ", "e?", "e se", "e para", "e no", "e na", "e em", "tambem", "o mesmo",
                   "und ", "und?", "was ist mit", "wie ist es mit", "und wenn", "auch ", "dasselbe", "gilt das")
FOLLOWUP_WORDS = {"it", "that", "this", "those", "these", "them", "there", "they",
                  "eso", "esto", "ello", "alli", "ellos", "isso", "isto", "eles", "dort", "dahin", "dafur", "davon"}
CITATION = re.compile(r"\[(\d{1,2})\]")
DEFAULT_PROMPT = Path(__file__).resolve().parent.parent / "prompts" / "knowledge_answer.txt"


@dataclass(frozen=True)
class Answer:
    text: str  # the English answer with its sources, as the CLI and the console show it
    mode: str  # "llm" | "extractive" | "no_answer"
    sources: list[Hit] = field(default_factory=list)
    body: str = ""  # the answer without its source line: the customer's response wraps it in their language

    def source_titles(self) -> str:
        """The cited articles' titles (they stay English), for the customer's response."""
        return "; ".join(dict.fromkeys(hit.title for hit in self.sources))


# Keyword evidence lifts a borderline semantic match: "can I pay with amex" shares "Amex" with the
# article but its cosine alone is low. Calibrated on eval/kb_questions.yml (README, "Knowledge base").
KEYWORD_WEIGHT = 0.005
KEYWORD_CAP = 12.0  # BM25 grows with repeated rare words; past this it proves nothing more


def relevance(hit: Hit) -> float:
    return hit.vector_score + KEYWORD_WEIGHT * min(hit.keyword_score, KEYWORD_CAP)


def is_relevant(hits: Sequence[Hit], min_similarity: float, min_relevance: float | None = None) -> bool:
    """The best hit is close in meaning, or close enough with the question's words in it."""
    if not hits:
        return False
    best = hits[0]
    return best.vector_score >= min_similarity or (min_relevance is not None and relevance(best) >= min_relevance)


def is_followup(question: str) -> bool:
    text = plain_words(question)
    words = re.findall(r"\w+", text)
    if not words:
        return False
    if f"{text} ".startswith(FOLLOWUP_STARTS):
        return True
    return len(words) <= 4 and bool(FOLLOWUP_WORDS & set(words))


def rewrite_followup(question: str, previous_questions: Sequence[str]) -> str:
    """A follow-up becomes standalone by carrying the customer's previous question along."""
    previous = next((q.strip() for q in reversed(previous_questions) if q and q.strip()), "")
    if not previous or not is_followup(question):
        return question.strip()
    return f"{previous} {question.strip()}"


def trim(text: str, limit: int = WHATSAPP_ANSWER_CHARS) -> str:
    text = " ".join(text.split()) if "\n" not in text else "\n".join(" ".join(line.split())
                                                                     for line in text.splitlines() if line.strip())
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("\n"), cut.rfind("! "), cut.rfind("? "))
    return (cut[: end + 1] if end > limit // 2 else cut[: cut.rfind(" ")] + " …").strip()


def source_line(hits: Sequence[Hit]) -> str:
    titles: list[str] = []
    for hit in hits:
        if hit.title not in titles:
            titles.append(hit.title)
    return ("Source: " if len(titles) == 1 else "Sources: ") + "; ".join(titles)


def extractive_answer(hits: Sequence[Hit]) -> Answer:
    best = hits[0]
    body = trim(best.text)
    return Answer(text=f"{body}\n\n📄 {source_line([best])}", mode="extractive", sources=[best], body=body)


def context_block(hits: Sequence[Hit]) -> str:
    return "\n\n".join(f"[{n}] {hit.title_path} ({hit.title})\n{hit.text}" for n, hit in enumerate(hits, 1))


def build_prompt(template: str, question: str, hits: Sequence[Hit], language: str = "en") -> str:
    language_name = ENGLISH_NAMES.get(language, ENGLISH_NAMES[DEFAULT_LANGUAGE])
    return (template.replace("{question}", question.strip()).replace("{context}", context_block(hits))
            .replace("{max_chars}", str(WHATSAPP_ANSWER_CHARS)).replace("{no_answer}", NO_ANSWER_MARKER)
            .replace("{language}", language_name))


def load_prompt(path: Path | None = None) -> str:
    return (path or DEFAULT_PROMPT).read_text(encoding="utf-8")


def parse_llm_answer(raw: str, hits: Sequence[Hit]) -> Answer | None:
    """The model's text → an answer citing the sources it used; None when it did not answer from them.

    None for: the no-answer marker, an empty reply, or a reply that cites no source or a
    source that was not given (it is then not grounded in what we retrieved).
    """
    text = (raw or "").strip()
    if not text or NO_ANSWER_MARKER in text:
        return None
    cited = [int(n) for n in CITATION.findall(text)]
    if not cited or any(not 1 <= n <= len(hits) for n in cited):
        return None
    used: list[Hit] = []
    for n in cited:
        if hits[n - 1] not in used:
            used.append(hits[n - 1])
    body = re.sub(r"\s+([.,;:!?])", r"\1", CITATION.sub("", text))
    body = trim(re.sub(r"[ \t]{2,}", " ", body).strip())
    return Answer(text=f"{body}\n\n📄 {source_line(used)}", mode="llm", sources=used, body=body)


def no_answer() -> Answer:
    """The customer reads domain/knowledge.yml's utter_kb_no_answer in their language; this is for the CLI."""
    text = ("I couldn't find that in the Voltbay help centre, and I'd rather not guess. "
            "Would you like me to pass you to a person from our team?")
    return Answer(text=text, mode="no_answer", body=text)
