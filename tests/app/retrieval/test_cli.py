"""`kb` end to end on a temporary knowledge base, with the real local embedder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval import embedders
from retrieval.cli import main


@pytest.fixture
def kb_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KB_BACKEND", "embedded")
    monkeypatch.setenv("KB_PATH", str(tmp_path / "kb" / "knowledge.db"))
    monkeypatch.setenv("KB_EMBEDDER", "local")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "refunds.md").write_text("# Refunds\n\n## Timing\nWe refund within 3 working days after the check.\n")
    (docs / "payments.html").write_text("<h1>Payments</h1><p>We accept Visa, PayPal and Bizum.</p>")
    return docs


def test_ingest_search_list_delete(kb_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(kb_env), "--quiet"]) == 0
    assert "added 2, updated 0, unchanged 0, failed 0" in capsys.readouterr().out
    assert main(["ingest", str(kb_env), "--quiet"]) == 0
    assert "added 0, updated 0, unchanged 2" in capsys.readouterr().out

    assert main(["search", "do you take paypal", "-k", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [set(r) for r in results] == [{"doc_id", "title", "chunk", "score", "source"}] * 2
    assert results[0]["doc_id"] == "payments" and results[0]["source"].endswith("payments.html")

    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert f"embedder: {embedders.LocalE5Embedder.name}" in listing and "refunds" in listing and "v1" in listing

    assert main(["delete", "refunds"]) == 0
    assert main(["delete", "refunds"]) == 1
    assert "no document 'refunds'" in capsys.readouterr().err


def test_bad_input_gets_clear_errors(kb_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(kb_env / "missing.md"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    (kb_env / "empty.txt").write_text("  ")
    assert main(["ingest", str(kb_env), "--quiet"]) == 1  # the other files still went in
    captured = capsys.readouterr()
    assert "added 2" in captured.out and "no text" in captured.err
    assert main(["search", "x", "-k", "0"]) == 2
    assert main(["search", "x", "-k", "500"]) == 2


def test_eval_gate_and_report(kb_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["ingest", str(kb_env), "--quiet"])
    questions = tmp_path / "q.yml"
    questions.write_text("questions:\n  - {question: 'when do i get my money back', doc_id: refunds}\n"
                         "  - {question: 'can i pay with bizum', doc_id: payments}\n"
                         "  - {question: 'who won the champions league', doc_id: null}\n")
    out = tmp_path / "eval.json"
    assert main(["eval", str(questions), "--min-recall5", "0.9", "--out", str(out), "--plot",
                 str(tmp_path / "eval.png")]) == 0
    report = json.loads(out.read_text())
    assert report["recall_at_5"] == 1.0 and report["answerable"] == 2 and report["unanswerable"] == 1
    assert (tmp_path / "eval.png").stat().st_size > 1000
    assert main(["eval", str(questions), "--min-recall5", "1.01"]) == 1
    questions.write_text("questions:\n  - {question: 'q', doc_id: not-a-document}\n")
    assert main(["eval", str(questions)]) == 2
    assert "not in the knowledge base" in capsys.readouterr().err
    questions.write_text("just a string")
    assert main(["eval", str(questions)]) == 2
