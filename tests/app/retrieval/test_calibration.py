"""The gate's calibration: most unanswerable questions refused within the false-refusal budget."""

from __future__ import annotations

import pytest

from retrieval.calibration import calibrate
from retrieval.evaluation import Question


def scored(answerable: list[float], unanswerable: list[float]) -> list[tuple[Question, float]]:
    return ([(Question(f"a{i}", "doc"), s) for i, s in enumerate(answerable)]
            + [(Question(f"u{i}", None), s) for i, s in enumerate(unanswerable)])


def test_the_threshold_refuses_most_unanswerable_within_the_budget() -> None:
    found = calibrate(scored([0.80, 0.85, 0.86, 0.87, 0.88, 0.89, 0.90, 0.91, 0.92, 0.93], [0.70, 0.82, 0.84, 0.95]),
                      max_false_refusal=0.10)
    assert found.threshold == 0.85  # refuses 0.80 (1 in 10 answerable), and 0.70, 0.82, 0.84
    assert found.refusal_rate == 0.75 and found.false_refusal_rate == 0.1


def test_no_budget_refuses_only_below_every_answerable_question() -> None:
    found = calibrate(scored([0.80, 0.90], [0.70, 0.85]), max_false_refusal=0.0)
    assert found.threshold == 0.8 and found.refusal_rate == 0.5 and found.false_refusal_rate == 0.0


def test_both_kinds_of_question_are_needed() -> None:
    with pytest.raises(ValueError, match="answerable and unanswerable"):
        calibrate(scored([0.9], []))
