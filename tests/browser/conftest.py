"""One running stack (sandbox, Rasa, actions, console) for the browser tests, and Chromium pages.

Needs Debian's chromium (/usr/bin/chromium), a trained model and both envs (`make test-browser`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.integration.harness import ROOT, Stack

CHROMIUM = Path("/usr/bin/chromium")
RESULTS = ROOT / "results"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not CHROMIUM.exists():
        skip = pytest.mark.skip(reason="Debian's chromium is not installed")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    RESULTS.mkdir(exist_ok=True)
    with Stack(tmp_path_factory.mktemp("browser_stack"), with_console=True).running() as running:
        yield running


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield chromium
        chromium.close()


def new_page(browser: Browser, width: int = 420, height: int = 860) -> Page:
    """A page in its own context (own cookies): a phone-sized customer or agent."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


@pytest.fixture
def page(stack: Stack, browser: Browser) -> Iterator[Page]:
    page = new_page(browser)
    yield page
    page.context.close()
