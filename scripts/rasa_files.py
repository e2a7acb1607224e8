"""Reading Rasa's YAML files (data, domain) the same way in every project script."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def yaml_files(path: Path) -> list[Path]:
    """The .yml files below a folder, sorted, or the one file given."""
    return sorted(path.rglob("*.yml")) if path.is_dir() else [path]


def load_sections(path: Path, key: str) -> Iterator[Any]:
    """The `key` section (nlu, forms, stories, …) of every YAML file under `path` that has one."""
    for file in yaml_files(path):
        section = (yaml.safe_load(file.read_text(encoding="utf-8")) or {}).get(key)
        if section:
            yield section


def intent_blocks(path: Path) -> Iterator[dict[str, Any]]:
    """Every `- intent:` block of the NLU data under `path`."""
    for section in load_sections(path, "nlu"):
        yield from (item for item in section if isinstance(item, dict) and "intent" in item)
