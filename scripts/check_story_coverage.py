"""Fail unless every training rule and story is exercised by a test story.

A rule or story counts as covered when its intents and actions, in order and
without gaps, appear inside one story of tests/test_*.yml (slot and loop
steps are ignored: they are not predictions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent

Step = tuple[str, str]


def steps_of(block: dict[str, Any]) -> list[Step]:
    """('intent', name) / ('action', name) pairs of a story, rule or test story."""
    sequence: list[Step] = []
    for step in block.get("steps") or []:
        if not isinstance(step, dict):
            continue
        if "intent" in step:
            sequence.append(("intent", str(step["intent"])))
        elif "action" in step:
            sequence.append(("action", str(step["action"])))
    return sequence


def blocks(paths: list[Path]) -> list[tuple[str, list[Step]]]:
    found: list[tuple[str, list[Step]]] = []
    for path in paths:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for key, label in (("stories", "story"), ("rules", "rule")):
            for block in content.get(key) or []:
                name = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {block.get(label)}"
                found.append((name, steps_of(block)))
    return found


def contains(haystack: list[Step], needle: list[Step]) -> bool:
    if not needle:
        return True
    width = len(needle)
    return any(haystack[i : i + width] == needle for i in range(len(haystack) - width + 1))


def uncovered(training: list[tuple[str, list[Step]]], tests: list[tuple[str, list[Step]]]) -> list[str]:
    return [name for name, needle in training if not any(contains(steps, needle) for _, steps in tests)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--tests", type=Path, default=ROOT / "tests")
    args = parser.parse_args(argv)
    training = blocks(sorted(args.data.rglob("*.yml")))
    training = [(name, steps) for name, steps in training if steps]
    tests = blocks(sorted(args.tests.glob("test_*.yml")))
    missing = uncovered(training, tests)
    for name in missing:
        print(f"not covered by any test story: {name}", file=sys.stderr)
    print(f"{len(training) - len(missing)}/{len(training)} rules and stories covered by {len(tests)} test stories")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
