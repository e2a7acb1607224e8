"""Fail when the held-out NLU test scores below the bar, or leaks into training.

Reads Rasa's intent_report.json (from `rasa test nlu`), prints macro-F1 and
the weakest intents, and checks that no held-out example is also a training
example (which would make the score meaningless).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from scripts.rasa_files import intent_blocks

ROOT = Path(__file__).resolve().parent.parent
ANNOTATION = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\{[^}]*\}")
SUMMARY_KEYS = {"accuracy", "macro avg", "weighted avg", "micro avg"}


def plain(example: str) -> str:
    """The text a customer typed: annotations removed, case and spaces folded."""
    text = ANNOTATION.sub(lambda m: m.group(1) or m.group(2), example)
    return " ".join(text.lower().split())


def examples(path: Path) -> set[str]:
    found: set[str] = set()
    for block in intent_blocks(path):
        for line in str(block.get("examples", "")).splitlines():
            line = line.strip()
            if line.startswith("- "):
                found.add(plain(line[2:]))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("--min-macro-f1", type=float, default=0.90)
    parser.add_argument("--holdout", type=Path, default=ROOT / "tests" / "nlu")
    parser.add_argument("--training", type=Path, default=ROOT / "data" / "nlu")
    args = parser.parse_args(argv)

    leaked = sorted(examples(args.holdout) & examples(args.training))
    for text in leaked:
        print(f"held-out example is also in the training data: {text!r}", file=sys.stderr)

    report = json.loads(args.report.read_text())
    macro_f1 = float(report["macro avg"]["f1-score"])
    per_intent = {k: v for k, v in report.items() if k not in SUMMARY_KEYS and isinstance(v, dict)}
    weakest = sorted(per_intent.items(), key=lambda kv: kv[1]["f1-score"])[:5]
    print(f"held-out NLU: {len(per_intent)} intents, accuracy {report.get('accuracy', 0):.3f}, "
          f"macro-F1 {macro_f1:.3f} (minimum {args.min_macro_f1:.2f})")
    for name, scores in weakest:
        print(f"  {name:<28} F1 {scores['f1-score']:.3f}  support {scores['support']}")
    if leaked:
        return 1
    if macro_f1 < args.min_macro_f1:
        print(f"error: intent macro-F1 {macro_f1:.3f} < {args.min_macro_f1:.2f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
