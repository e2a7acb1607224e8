"""A designer chats in the sandbox page, in real headless Chromium, through the real channel and Rasa.

Needs Debian's chromium (/usr/bin/chromium), a trained model and both envs (`make test-browser`).
Screenshots land in results/.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import RESULTS
from tests.integration.harness import Stack


def open_chat(page: Page, stack: Stack, phone: str) -> None:
    page.goto(stack.graph_url + "/")
    page.fill("#phone", phone)
    page.fill("#name", "Lucía")
    page.click("#identity button")
    expect(page.locator("#subtitle")).to_contain_text(phone)


def say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_designer_chats_with_buttons_lists_and_ticks(page: Page, stack: Stack) -> None:
    RESULTS.mkdir(exist_ok=True)
    open_chat(page, stack, "44799000001")
    say(page, "hi")
    track = page.locator(".bubble.theirs .reply-button", has_text="Track my order")
    expect(track).to_be_visible()
    # The customer's message got blue ticks once the channel marked it read.
    expect(page.locator(".bubble.mine .ticks.read").first).to_be_visible()
    page.screenshot(path=str(RESULTS / "sandbox_1_greeting.png"))

    track.click()  # a tap sends the button's id: the payload /check_order_status
    expect(page.locator(".bubble.theirs", has_text="order number")).to_be_visible()
    say(page, "VB-310977")
    expect(page.locator(".bubble.theirs", has_text="is on its way")).to_be_visible()
    page.screenshot(path=str(RESULTS / "sandbox_2_order_status.png"))

    say(page, "i want to return something")
    expect(page.locator(".bubble.theirs", has_text="start your return")).to_be_visible()
    say(page, "VB-104233")
    choose = page.locator(".bubble.theirs .reply-button", has_text=re.compile("Choose"))
    expect(choose).to_be_visible()  # five reasons: a list message
    choose.click()
    expect(page.locator("#list-dialog .list-row")).to_have_count(5)
    page.screenshot(path=str(RESULTS / "sandbox_3_list.png"))
    page.locator("#list-dialog .list-row", has_text="Arrived damaged").click()
    expect(page.locator(".bubble.theirs", has_text="return is registered")).to_be_visible()
    expect(page.locator(".bubble.mine", has_text="Arrived damaged")).to_be_visible()
    page.screenshot(path=str(RESULTS / "sandbox_4_return_done.png"), full_page=True)
