from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.answering import (
    NO_ANSWER_MARKER,
    WHATSAPP_ANSWER_CHARS,
    build_prompt,
    extractive_answer,
    is_followup,
    is_relevant,
    load_prompt,
    parse_llm_answer,
    rewrite_followup,
    trim,
)
from retrieval.embedders import OpenAIEmbedder
from retrieval.llm import LLMAnswerer
from retrieval.store import Hit
from tests.app.retrieval.openai_standin import openai_standin


def hit(doc_id: str, text: str, cosine: float = 0.9, title: str | None = None) -> Hit:
    return Hit(chunk_id=f"{doc_id}#0", doc_id=doc_id, title=title or doc_id.title(), title_path=f"{doc_id} › part",
               text=text, source=f"knowledge/{doc_id}.md", score=1.0, vector_score=cosine, keyword_score=1.0)


HITS = [hit("refunds", "We refund within 3 working days.", title="Refunds"),
        hit("return-policy", "Returns are free from Spain.", title="Return policy")]


def test_relevance_gate_reads_the_best_cosine() -> None:
    assert is_relevant(HITS, 0.85)
    assert not is_relevant([hit("x", "t", cosine=0.5)], 0.85)
    assert not is_relevant([], 0.0)


@pytest.mark.parametrize("question, expected", [
    ("and for Spain?", True), ("what about the UK", True), ("is it free?", True), ("y para Portugal?", True),
    ("¿y si pago con tarjeta?", True), ("e para o Brasil?", True), ("und nach Österreich?", True),
    ("was ist mit der Schweiz", True), ("eso es gratis?", True),
    ("how long does delivery to Spain take?", False), ("donde esta la tienda", False),
    ("wie lange dauert der Versand", False), ("hello", False), ("", False)])
def test_followup_detection(question: str, expected: bool) -> None:
    assert is_followup(question) is expected


def test_followup_is_rewritten_with_the_previous_question() -> None:
    assert rewrite_followup("and for Spain?", ["hi", "how much is delivery to Germany?"]) == \
        "how much is delivery to Germany? and for Spain?"
    assert rewrite_followup("how do I pay?", ["delivery to Germany?"]) == "how do I pay?"
    assert rewrite_followup("and for Spain?", []) == "and for Spain?"


def test_extractive_answer_is_whatsapp_sized_and_cites_its_source() -> None:
    long = hit("warranty", " ".join(f"Sentence {n} about the warranty." for n in range(100)), title="Warranty")
    answer = extractive_answer([long])
    body, source = answer.text.split("\n\n📄 ")
    assert len(body) <= WHATSAPP_ANSWER_CHARS and body.endswith(".")
    assert source == "Source: Warranty" and answer.mode == "extractive"
    assert trim("short") == "short"


def test_prompt_template_carries_question_numbered_context_and_marker() -> None:
    prompt = build_prompt(load_prompt(), "how long for a refund?", HITS)
    assert "[1] refunds › part (Refunds)\nWe refund within 3 working days." in prompt
    assert "[2] return-policy" in prompt and "how long for a refund?" in prompt
    assert NO_ANSWER_MARKER in prompt and "{context}" not in prompt


def test_the_prompt_asks_for_the_customers_language_and_answers_keep_their_sources() -> None:
    assert "Reply in Spanish, the customer's language" in build_prompt(load_prompt(), "q?", HITS, "es")
    assert "Reply in English" in build_prompt(load_prompt(), "q?", HITS, "xx")
    answer = parse_llm_answer("Reembolsamos en 3 días laborables [1].", HITS)
    assert answer is not None and answer.body == "Reembolsamos en 3 días laborables."
    assert answer.source_titles() == "Refunds"


def test_citations_are_parsed_into_sources() -> None:
    answer = parse_llm_answer("Refunds take 3 working days [1], and returns are free [2].", HITS)
    assert answer is not None and answer.mode == "llm"
    assert answer.text == "Refunds take 3 working days, and returns are free.\n\n📄 Sources: Refunds; Return policy"
    assert [h.doc_id for h in answer.sources] == ["refunds", "return-policy"]


@pytest.mark.parametrize("raw", ["NO_ANSWER", "", "   ", "Refunds are instant.", "See [7] for details.",
                                 "I don't know. NO_ANSWER"])
def test_uncited_invented_or_declined_answers_are_not_answers(raw: str) -> None:
    assert parse_llm_answer(raw, HITS) is None


def test_llm_path_with_the_real_openai_client_against_a_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    with openai_standin() as standin:
        standin.reply = lambda body: "We refund within 3 working days after the check [1]."
        standin.fail_next = [500]  # one server error: the client retries
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", standin.url)
        monkeypatch.setenv("OPENAI_MODEL", "test-model")
        monkeypatch.setenv("OPENAI_MAX_RETRIES", "2")
        llm = LLMAnswerer.from_env()
        assert llm is not None
        answer = llm.answer("when is my refund?", HITS)
        assert answer is not None and answer.sources == [HITS[0]]
        request = standin.requests[-1]
        assert request["path"] == "/v1/chat/completions" and request["authorization"] == "Bearer sk-test"
        assert request["body"]["model"] == "test-model" and request["body"]["temperature"] == 0
        assert "We refund within 3 working days." in request["body"]["messages"][0]["content"]
        assert len(standin.requests) == 2  # the 500, then the retry
        standin.reply = lambda body: "NO_ANSWER"
        assert llm.answer("do you sell cars?", HITS) is None
        standin.reply = lambda body: "How long does delivery to Spain take?"
        assert llm.rewrite("and for Spain?", ["how long does delivery to Germany take?"]) == \
            "How long does delivery to Spain take?"


def test_no_api_key_means_no_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert LLMAnswerer.from_env() is None


def test_openai_embedder_batches_and_normalises(monkeypatch: pytest.MonkeyPatch) -> None:
    from openai import OpenAI

    with openai_standin() as standin:
        embedder = OpenAIEmbedder(OpenAI(api_key="sk-test", base_url=standin.url, max_retries=0))
        embedder.BATCH = 2
        vectors = embedder.embed_passages(["a", "bb", "ccc"])
        assert vectors.shape == (3, 3) and len(standin.requests) == 2
        assert embedder.name == "openai:text-embedding-3-small"
        assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5


def test_designers_can_point_to_their_own_prompt(tmp_path: Path) -> None:
    custom = tmp_path / "prompt.txt"
    custom.write_text("Q: {question}\nC: {context}\nElse {no_answer}")
    assert build_prompt(load_prompt(custom), "q?", HITS[:1]).startswith("Q: q?\nC: [1] refunds")


def test_keyword_evidence_lifts_a_borderline_match_but_not_a_weak_one() -> None:
    borderline = Hit("c", "payment-methods", "P", "P", "Amex", "s", 1.0, vector_score=0.843, keyword_score=5.5)
    weak = Hit("c", "x", "X", "X", "t", "s", 1.0, vector_score=0.80, keyword_score=12.0)
    assert not is_relevant([borderline], 0.86)
    assert is_relevant([borderline], 0.86, 0.865)
    assert not is_relevant([weak], 0.86, 0.865)
