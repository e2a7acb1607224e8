"""The Rasa process's loaded model is frozen out of the garbage collector's full passes, once."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from connectors.process_tuning import freeze_loaded_model


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
