"""The project's tooling: validation filter, story coverage, retrain decision, run supervisor."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

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
def test_nlu_report_gate(tmp_path: Path) -> None:
    report = tmp_path / "intent_report.json"
    holdout = tmp_path / "holdout.yml"
    training = tmp_path / "training.yml"
    holdout.write_text('nlu:\n- intent: greet\n  examples: |\n    - hello there\n')
    training.write_text('nlu:\n- intent: greet\n  examples: |\n    - hi\n')
    good = {"greet": {"f1-score": 0.95, "support": 5}, "macro avg": {"f1-score": 0.95}, "accuracy": 0.95}
    report.write_text(json.dumps(good))
    args = [str(report), "--holdout", str(holdout), "--training", str(training)]
    assert check_nlu_report.main(args) == 0
    report.write_text(json.dumps({**good, "macro avg": {"f1-score": 0.89}}))
    assert check_nlu_report.main(args) == 1
    report.write_text(json.dumps(good))
    training.write_text('nlu:\n- intent: greet\n  examples: |\n    - Hello   [there](x)\n')  # leaked
    assert check_nlu_report.main(args) == 1


def test_holdout_set_is_not_in_the_training_data() -> None:
    assert not check_nlu_report.examples(ROOT / "tests/nlu") & check_nlu_report.examples(ROOT / "data/nlu")


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
