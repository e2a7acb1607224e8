"""`rasa data validate --fail-on-warnings`, failing on every warning it prints.

Rasa 3.6 prints some validator warnings (unused responses or intents) without
failing even with --fail-on-warnings (RasaHQ/rasa#11843); we fail on them too,
except two that Rasa 3.6 raises for every correct project and that we check
ourselves instead:
- "duplicated intents ... across multiple domain files" for retrieval intents:
  the importer merges the NLU data's retrieval intents into a domain that must
  already list them; accepted only when every name is a retrieval intent.
- "The utterance '…' is not used in any story or rule" for responses that are
  used, just not by a story: a form's question (accepted only when the name is
  utter_ask_[<form>_]<slot> of a slot some form requires) or a response a custom
  action sends (accepted only when actions/ names it: `response="…"`, a `Reply("…")`
  of actions/shop.py or a value of a `RESPONSES` table) or the channels' agent API
  sends (connectors/, as a `…_RESPONSE = "…"` constant).
- "The intent '…' is listed in the domain file, but is not found in the NLU training
  data" for an intent that one of our NLU components or channels sets instead of a classifier
  (rasa_components/ or connectors/, as a `…_INTENT = "…"` constant), as Rasa's own
  FallbackClassifier sets nlu_fallback.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from scripts.rasa_files import intent_blocks, load_sections

ROOT = Path(__file__).resolve().parent.parent

# Lines Rasa's validator and data readers emit for problems in *our* files.
PROBLEM = re.compile(r"UserWarning|rasa\.validator\s+-\s+(?:WARNING|ERROR)|^\s*ERROR", re.MULTILINE)
# Deprecation noise from Rasa's own dependencies, not about our data.
NOISE = re.compile(r"DeprecationWarning|FutureWarning|MovedIn20Warning|pkg_resources|declare_namespace")


UNTRAINED_INTENT = re.compile(r"The intent '(\w+)' is listed in the domain file, but is not found in the NLU")
COMPONENT_INTENT = re.compile(r"""_INTENT\s*=\s*["'](\w+)["']""")
DUPLICATE_INTENTS = re.compile(r"duplicated intents have been found across multiple domain files: (.+)$")
UNUSED_UTTERANCE = re.compile(r"The utterance '(utter_\w+)' is not used in any story or rule\.")
# `response="utter_x"` in an action; `…_RESPONSE = "utter_x"` where the channels' agent API sends one.
ACTION_RESPONSE = re.compile(r"""(?:response=|_RESPONSE\s*=\s*|Reply\(|"\w+":\s*)["'](utter_\w+)["']""")


def form_questions(domain_path: Path) -> set[str]:
    """utter_ask_<slot> and utter_ask_<form>_<slot> for every slot a form requires."""
    names: set[str] = set()
    for forms in load_sections(domain_path, "forms"):
        for form, spec in forms.items():
            for slot in (spec or {}).get("required_slots") or []:
                names.update({f"utter_ask_{slot}", f"utter_ask_{form}_{slot}"})
    return names


def action_responses(actions_path: Path) -> set[str]:
    """Responses the custom actions send by name."""
    return {
        name for file in sorted(actions_path.rglob("*.py"))
        for name in ACTION_RESPONSE.findall(file.read_text(encoding="utf-8"))
    }


def component_intents(components_path: Path) -> set[str]:
    """Intents our NLU components set themselves (no training examples)."""
    return {name for file in sorted(components_path.rglob("*.py"))
            for name in COMPONENT_INTENT.findall(file.read_text(encoding="utf-8"))}


def retrieval_intents(data_path: Path) -> set[str]:
    return {
        str(block["intent"]).split("/", 1)[0] for block in intent_blocks(data_path) if "/" in str(block["intent"])
    }


def is_known_false_positive(line: str, used_elsewhere: set[str], retrieval: set[str]) -> bool:
    duplicates = DUPLICATE_INTENTS.search(line)
    if duplicates:
        names = {name.strip() for name in duplicates.group(1).split(",")}
        return bool(names) and names <= retrieval
    unused = UNUSED_UTTERANCE.search(line) or UNTRAINED_INTENT.search(line)
    return bool(unused) and unused.group(1) in used_elsewhere


def problems(output: str, used_elsewhere: set[str] = frozenset(), retrieval: set[str] = frozenset()) -> list[str]:
    return [
        line
        for line in output.splitlines()
        if PROBLEM.search(line)
        and not NOISE.search(line)
        and not is_known_false_positive(line, used_elsewhere, retrieval)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rasa", default=str(ROOT / ".venv/rasa/bin/rasa"))
    args = parser.parse_args(argv)
    domain = "domain" if (ROOT / "domain").is_dir() else "domain.yml"
    command = [args.rasa, "data", "validate", "--fail-on-warnings",
               "--data", "data", "--domain", domain, "--config", "config.yml"]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    output = run.stdout + run.stderr
    used_elsewhere = (form_questions(ROOT / domain) | action_responses(ROOT / "actions")
                      | action_responses(ROOT / "connectors") | component_intents(ROOT / "rasa_components")
                      | component_intents(ROOT / "connectors"))
    found = problems(output, used_elsewhere, retrieval_intents(ROOT / "data"))
    for line in output.splitlines():
        if "rasa.validator" in line or line in found:
            print(line)
    if run.returncode != 0 or found:
        print(f"error: rasa data validate: exit {run.returncode}, {len(found)} warning(s)", file=sys.stderr)
        if run.returncode != 0 and not found:
            print(output[-4000:], file=sys.stderr)
        return 1
    print("data valid: no errors, no warnings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
