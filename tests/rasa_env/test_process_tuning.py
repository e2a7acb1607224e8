"""The Rasa process's loaded model is frozen out of the garbage collector's full passes, once; action server
answers are checked against a schema compiled once, judged exactly as Rasa judges them."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import ValidationError

from connectors.process_tuning import check_action_results_with_compiled_schema, freeze_loaded_model


class ReadyAgent:
    def __init__(self, ready: bool = True) -> None:
        self.ready = ready

    def is_ready(self) -> bool:
        return self.ready


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_once_the_model_is_loaded_and_only_once() -> None:
    assert freeze_loaded_model(None) is False
    assert freeze_loaded_model(ReadyAgent(ready=False)) is False  # no model yet: nothing worth freezing
    assert gc.get_freeze_count() == 0
    assert freeze_loaded_model(ReadyAgent()) is True
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # this test process: pytest, Rasa's imports…
    assert freeze_loaded_model(ReadyAgent()) is False  # the second channel of the process
    assert gc.get_freeze_count() == frozen
    cycles = [[] for _ in range(1000)]
    for cycle in cycles:
        cycle.append(cycle)  # reachable only from itself once the list is gone
    del cycles, cycle
    assert gc.collect() >= 1000  # what is created later is still collected


def test_operators_can_switch_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RASA_GC_FREEZE", "false")
    assert freeze_loaded_model(ReadyAgent()) is False
    assert gc.get_freeze_count() == 0


# --- action server answers checked against a schema compiled once ---------------------------------

VALID_ANSWERS = [
    {"events": [{"event": "slot", "name": "order_id", "value": "VB-1"}], "responses": [{"text": "ok"}]},
    {"events": [], "responses": []},
    {},
]
BAD_ANSWERS = [  # malformed, wrong types, unknown events, hostile nesting
    {"events": "not a list"},
    [],
    "text",
    {"events": [{"event": "no-such-event"}]},
    {"responses": [1]},
    {"events": [{"event": "slot", "name": {"nested": ["x"] * 50}}]},
]


@pytest.fixture
def rasa_validator() -> Iterator[Any]:
    from rasa.core.actions.action import RemoteAction

    # Rasa's own function, also when a channel started earlier in this test process replaced it.
    before = RemoteAction._validate_action_result
    original = getattr(before, "rasa_original", before)
    RemoteAction._validate_action_result = original  # type: ignore[method-assign]
    yield original
    RemoteAction._validate_action_result = before  # type: ignore[method-assign]


def outcome(validate: Any, action: Any, answer: Any) -> str:
    try:
        return str(validate(action, answer))
    except ValidationError as error:
        return f"ValidationError: {error.message}"


def test_answers_are_judged_exactly_as_rasa_judges_them(rasa_validator: Any) -> None:
    from rasa.core.actions.action import RemoteAction

    action = RemoteAction("action_check_order", None)
    expected = [outcome(rasa_validator, action, answer) for answer in VALID_ANSWERS + BAD_ANSWERS]
    assert check_action_results_with_compiled_schema() is True
    assert RemoteAction._validate_action_result is not rasa_validator
    got = [outcome(RemoteAction._validate_action_result, action, answer) for answer in VALID_ANSWERS + BAD_ANSWERS]
    assert got == expected
    assert got[: len(VALID_ANSWERS)] == ["True"] * len(VALID_ANSWERS)
    assert all(g.startswith("ValidationError: ") and "Failed to validate Action server response" in g
               for g in got[len(VALID_ANSWERS):])


def test_the_schema_itself_is_checked_once_not_per_answer(rasa_validator: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from jsonschema import validators
    from rasa.core.actions.action import RemoteAction

    cls = validators.validator_for(RemoteAction.action_response_format_spec())
    checks: list[int] = []
    real = cls.check_schema.__func__  # type: ignore[attr-defined]

    def counting(validator_class: Any, schema: Any, *args: Any, **kwargs: Any) -> None:
        checks.append(1)
        real(validator_class, schema, *args, **kwargs)

    monkeypatch.setattr(cls, "check_schema", classmethod(counting))
    action = RemoteAction("action_check_order", None)
    rasa_validator(action, VALID_ANSWERS[0])
    rasa_validator(action, VALID_ANSWERS[0])
    assert len(checks) == 2  # Rasa's own: the metaschema check on every answer
    checks.clear()
    check_action_results_with_compiled_schema()
    for _ in range(5):
        RemoteAction._validate_action_result(action, VALID_ANSWERS[0])
    assert len(checks) == 1
    assert check_action_results_with_compiled_schema() is False  # the second channel of the process


def test_a_subclass_with_a_schema_of_its_own_gets_its_own_validator(rasa_validator: Any) -> None:
    from rasa.core.actions.action import RemoteAction

    class Strict(RemoteAction):
        @staticmethod
        def action_response_format_spec() -> dict[str, Any]:
            return {"type": "object", "required": ["events"]}

    check_action_results_with_compiled_schema()
    assert RemoteAction("a", None)._validate_action_result({}) is True
    with pytest.raises(ValidationError, match="'events' is a required property"):
        Strict("b", None)._validate_action_result({})


def test_the_schema_check_once_can_be_switched_off(rasa_validator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from rasa.core.actions.action import RemoteAction

    monkeypatch.setenv("RASA_ACTION_SCHEMA_CHECKED_ONCE", "false")
    assert check_action_results_with_compiled_schema() is False
    assert RemoteAction._validate_action_result is rasa_validator
