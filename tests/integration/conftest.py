"""One running stack (Rasa + actions + sandbox standing in for Graph and Evolution) for all live tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("whatsapp_live")
    running = Stack(workdir)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        for log in sorted(Path(workdir).glob("*.log")):
            tail = log.read_bytes()[-3000:].decode(errors="replace")
            print(f"--- {log.name} (tail) ---\n{tail}")
