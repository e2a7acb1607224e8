"""One running stack (Rasa + actions + sandbox standing in for Graph and Evolution) for all live tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("whatsapp_live")).running() as running:
        yield running
