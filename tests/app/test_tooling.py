"""The project's tooling: validation filter, story coverage, retrain decision, run supervisor."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from languages.text import plain_words
from scripts import check_nlu_report, check_story_coverage, run, train_if_changed, validate_data

ROOT = Path(__file__).resolve().parents[2]


# --- validate_data ------------------------------------------------------------
def test_only_form_questions_and_retrieval_duplicates_are_tolerated() -> None:
    questions = validate_data.form_questions(ROOT / "domain")
    retrieval = validate_data.retrieval_intents(ROOT / "data")
    assert {"utter_ask_order_number", "utter_ask_repair_form_order_number", "utter_ask_return_reason"} <= questions
    assert retrieval == {"faq", "chitchat"}
    output = "\n".join([
        "UserWarning: The following duplicated intents have been found across multiple domain files: chitchat, faq",
        "UserWarning: The utterance 'utter_ask_device' is not used in any story or rule.",
        "UserWarning: The utterance 'utter_ask_colour' is not used in any story or rule.",
        "UserWarning: The utterance 'utter_greet' is not used in any story or rule.",
        "UserWarning: The following duplicated intents have been found across multiple domain files: greet",
        "UserWarning: The intent 'restart' is not used in any story or rule.",
        "2026-11-25 INFO rasa.validator - Validating intents...",
        "DeprecationWarning: pkg_resources is deprecated",
    ])
    found = validate_data.problems(output, questions, retrieval)
    assert [line.split(": ", 1)[1][:40] for line in found] == [
        "The utterance 'utter_ask_colour' is not ",
        "The utterance 'utter_greet' is not used ",
        "The following duplicated intents have be",
        "The intent 'restart' is not used in any ",
    ]


# --- check_story_coverage -----------------------------------------------------
def test_coverage_needs_the_whole_sequence_in_one_test_story() -> None:
    rule = [("intent", "greet"), ("action", "utter_greet")]
    assert check_story_coverage.contains([("action", "x"), *rule, ("intent", "bye")], rule)
    assert not check_story_coverage.contains([("intent", "greet"), ("action", "other"), ("action", "utter_greet")],
                                             rule)
    missing = check_story_coverage.uncovered([("r", rule)], [("t", [("intent", "greet")])])
    assert missing == ["r"]


def test_every_rule_and_story_of_the_project_is_covered() -> None:
    assert check_story_coverage.main([]) == 0


# --- check_nlu_report ---------------------------------------------------------
def _blind_project(tmp_path: Path) -> tuple[Path, Path, Path]:
    blind, training, results = tmp_path / "blind", tmp_path / "training", tmp_path / "results"
    for folder in (blind / "en", blind / "es", training / "en", results):
        folder.mkdir(parents=True)
    (blind / "en/intents.yml").write_text(
        "nlu:\n- intent: greet\n  examples: |\n    - good evening team\n"
        "- intent: faq/delivery_time\n  examples: |\n    - how many days to lisbon\n")
    (blind / "es/intents.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - buenas tardes equipo\n")
    (blind / "en/person_requests.yml").write_text(
        "nlu:\n- intent: human_handoff\n  examples: |\n    - put me through to a colleague\n    - yo human\n")
    (blind / "en/person_mentions.yml").write_text(
        "nlu:\n- intent: check_order_status\n  examples: |\n    - my husband asks where [VB-104233](order_number) is\n")
    (training / "en/general.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - hi\n")
    return blind, training, results


def _results(results: Path, predicted: dict[tuple[str, str], str]) -> None:
    entries = [{"text": text, "intent": gold, "intent_prediction": {"name": guess, "confidence": 0.9}}
               for (text, gold), guess in predicted.items()]
    (results / "intent_successes.json").write_text(json.dumps([e for e in entries
                                                               if e["intent"] == e["intent_prediction"]["name"]]))
    (results / "intent_errors.json").write_text(json.dumps([e for e in entries
                                                            if e["intent"] != e["intent_prediction"]["name"]]))


RIGHT = {("good evening team", "greet"): "greet", ("how many days to lisbon", "faq"): "faq",
         ("buenas tardes equipo", "greet"): "greet",
         ("put me through to a colleague", "human_handoff"): "human_handoff",
         ("yo human", "human_handoff"): "human_handoff",
         ("my husband asks where VB-104233 is", "check_order_status"): "check_order_status"}


def _check(tmp_path: Path, predicted: dict[tuple[str, str], str], monkeypatch: pytest.MonkeyPatch,
           embed: Any = None, *extra: str) -> int:
    blind, training, results = _blind_project(tmp_path)
    _results(results, predicted)
    monkeypatch.setattr(check_nlu_report, "e5_embedder", lambda: embed or _orthogonal_embedder())
    return check_nlu_report.main([str(results), "--blind", str(blind), "--training", str(training), *extra])


def _orthogonal_embedder() -> Any:
    """Every distinct text its own axis: nothing is similar unless equal."""
    import numpy as np

    axes: dict[str, int] = {}

    def embed(texts: list[str]) -> Any:
        rows = np.zeros((len(texts), 64), dtype=np.float32)
        for i, text in enumerate(texts):
            rows[i, axes.setdefault(text, len(axes))] = 1.0
        return rows
    return embed


def test_nlu_report_passes_and_writes_its_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _check(tmp_path, RIGHT, monkeypatch) == 0
    figures = json.loads((tmp_path / "results/nlu_blind_report.json").read_text())
    assert figures["macro_f1"] == {"en": 1.0, "es": 1.0}
    assert figures["handoff_recall"] == 1.0 and figures["false_handoff_rate"] == 0.0


def test_nlu_report_counts_the_handoff_net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NLU missed a request the trigger policy's net catches: the customer is still handed over."""
    predicted = {**RIGHT, ("put me through to a colleague", "human_handoff"): "nlu_fallback"}
    assert _check(tmp_path, predicted, monkeypatch, None, "--min-macro-f1", "0.5") == 0
    figures = json.loads((tmp_path / "results/nlu_blind_report.json").read_text())
    assert figures["macro_f1"]["en"] == round((1 + 1 + 2 / 3 + 1) / 4, 4) and figures["handoff_recall"] == 1.0


def test_nlu_report_fails_a_language_below_the_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _check(tmp_path, {**RIGHT, ("buenas tardes equipo", "greet"): "goodbye"}, monkeypatch) == 1


def test_nlu_report_fails_a_missed_request_for_a_person(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _check(tmp_path, {**RIGHT, ("yo human", "human_handoff"): "greet"}, monkeypatch) == 1


def test_nlu_report_fails_a_handoff_on_a_mention(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    predicted = {**RIGHT, ("my husband asks where VB-104233 is", "check_order_status"): "human_handoff"}
    assert _check(tmp_path, predicted, monkeypatch) == 1


def test_nlu_report_fails_examples_missing_from_rasas_results(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert _check(tmp_path, {k: v for k, v in RIGHT.items() if k[0] != "yo human"}, monkeypatch) == 1


def test_nlu_report_refuses_a_copy_with_other_case_and_accents(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    blind, training, _ = _blind_project(tmp_path)
    (training / "en/general.yml").write_text("nlu:\n- intent: greet\n  examples: |\n    - Buenas tardes, ÉQUIPO!\n")
    leaks = check_nlu_report.near_duplicates(check_nlu_report.read_examples(blind),
                                             check_nlu_report.read_examples(training), _orthogonal_embedder())
    assert [(b.text, t.text, score) for b, t, score in leaks] == [
        ("buenas tardes equipo", "Buenas tardes, ÉQUIPO!", 1.0)]


def test_nlu_report_refuses_a_near_duplicate_by_embedding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    def embed(texts: list[str]) -> Any:  # "hi" and "good evening team" point the same way
        return np.array([[1.0, 0.0] if t in ("hi", "good evening team") else [0.0, 1.0] for t in texts])

    assert _check(tmp_path, RIGHT, monkeypatch, embed=embed) == 1


def test_blind_set_shares_no_text_with_the_training_data() -> None:
    """The exact half of make test-nlu's leak check, on the real files (the embedding half needs e5)."""
    folded = {plain_words(e.text) for e in check_nlu_report.read_examples(ROOT / "data/nlu")}
    assert not [e.text for e in check_nlu_report.read_examples(ROOT / "tests/nlu/blind")
                if plain_words(e.text) in folded]


def test_blind_set_meets_its_sizes() -> None:
    from collections import Counter

    blind = check_nlu_report.read_examples(ROOT / "tests/nlu/blind")
    assert {e.language for e in blind} == {"en", "es", "pt", "de"}
    per_intent = Counter(e.base_intent for e in blind)
    assert min(per_intent.values()) >= 20, per_intent
    assert sum(e.kind == "person_requests" for e in blind) >= 80
    assert sum(e.kind == "person_mentions" for e in blind) >= 60


def test_training_data_has_twelve_examples_per_intent_and_language() -> None:
    from collections import Counter

    counts = Counter((e.language, e.intent) for e in check_nlu_report.read_examples(ROOT / "data/nlu") if e.language)
    intents = {intent for _, intent in counts}
    short = {(lang, intent): counts[(lang, intent)] for lang in ("en", "es", "pt", "de") for intent in intents
             if counts[(lang, intent)] < 12}
    assert not short


# --- train_if_changed ---------------------------------------------------------
def _project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/nlu.yml").write_text("nlu: []\n")
    (tmp_path / "config.yml").write_text("pipeline: []\n")
    (tmp_path / "domain.yml").write_text("intents: []\n")
    return tmp_path


def test_fingerprint_follows_content_not_mtime(tmp_path: Path) -> None:
    project = _project(tmp_path)
    before = train_if_changed.fingerprint(project)
    os.utime(project / "config.yml", (time.time() + 100, time.time() + 100))
    assert train_if_changed.fingerprint(project) == before
    (project / "data/nlu.yml").write_text("nlu: [x]\n")
    assert train_if_changed.fingerprint(project) != before


def test_only_model_libraries_of_the_lock_file_count(tmp_path: Path) -> None:
    project = _project(tmp_path)
    (project / "requirements").mkdir()
    lock = project / "requirements/rasa.lock"
    lock.write_text("# header\nrasa==3.6.21\npytest==8.3.5\n")
    before = train_if_changed.fingerprint(project)
    lock.write_text("# header\nrasa==3.6.21\npytest==8.4.0\nhypothesis==6.1\n")
    assert train_if_changed.fingerprint(project) == before
    lock.write_text("# header\nrasa==3.6.22\npytest==8.4.0\n")
    assert train_if_changed.fingerprint(project) != before


def test_up_to_date_model_requires_same_fingerprint_and_the_file(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "fingerprint.json").write_text(json.dumps({"fingerprint": "abc", "model": "m.tar.gz"}))
    assert train_if_changed.up_to_date_model("abc", models) is None  # model file missing
    (models / "m.tar.gz").write_bytes(b"x")
    assert train_if_changed.up_to_date_model("abc", models) == models / "m.tar.gz"
    assert train_if_changed.up_to_date_model("def", models) is None
    (models / "fingerprint.json").write_text("{not json")
    assert train_if_changed.up_to_date_model("abc", models) is None


# --- run supervisor -----------------------------------------------------------
def test_env_file_parsing(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("# comment\nA=1\nexport B='two words'\nC=\"x=y\"\n\nbroken line\n")
    assert run.read_env_file(env) == {"A": "1", "B": "two words", "C": "x=y"}
    assert run.read_env_file(tmp_path / "missing") == {}


def test_token_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    token_file = tmp_path / "var" / "rasa_token"
    first = run.rasa_token({}, token_file)
    assert len(first) >= 32 and run.rasa_token({}, token_file) == first
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert run.rasa_token({"RASA_TOKEN": "given"}, token_file) == "given"


def test_a_crashed_process_is_reported_and_the_others_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    messages: list[str] = []
    services = [
        run.Service("sleeper", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"]),
        run.Service("crasher", [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]),
    ]
    supervisor = run.Supervisor(services, dict(os.environ), messages.append)
    supervisor.start()
    started = time.monotonic()
    assert supervisor.watch() == 1
    assert time.monotonic() - started < 30
    assert any("crasher exited with code 3" in m for m in messages)
    assert all(proc.poll() is not None for proc in supervisor.procs.values())
    out = capsys.readouterr().out
    assert "[crasher] boom" in out and "[sleeper] up" in out


def test_rasa_serves_with_single_threaded_tensorflow_unless_the_operator_says_otherwise() -> None:
    from connectors.rasa_serving import SERVING_DEFAULTS, serving_env

    assert serving_env({"PATH": "/bin"}) == {"PATH": "/bin", **SERVING_DEFAULTS}
    assert SERVING_DEFAULTS == {"TF_INTRA_OP_PARALLELISM_THREADS": "1", "TF_INTER_OP_PARALLELISM_THREADS": "1"}
    mine = serving_env({"TF_INTRA_OP_PARALLELISM_THREADS": "4", "TF_INTER_OP_PARALLELISM_THREADS": ""})
    assert mine == {"TF_INTRA_OP_PARALLELISM_THREADS": "4", "TF_INTER_OP_PARALLELISM_THREADS": "1"}
    started = run.process_env({"TF_INTER_OP_PARALLELISM_THREADS": "2"}, {"PATH": "/bin"})  # what `make run` starts
    assert started["TF_INTRA_OP_PARALLELISM_THREADS"] == "1" and started["TF_INTER_OP_PARALLELISM_THREADS"] == "2"
    assert started["RASA_TELEMETRY_ENABLED"] == "false" and started["PATH"] == "/bin"
