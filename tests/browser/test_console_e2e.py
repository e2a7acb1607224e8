"""Handoff end to end in headless Chromium: a customer in the sandbox asks for a person, an agent in the
console takes it, replies, sees the customer's answer live, hands back, and the bot answers again."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import RESULTS, new_page
from tests.integration.harness import CONSOLE_ADMIN, Stack

PHONE = "44799000042"


def customer_says(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_handoff_from_the_sandbox_to_the_console_and_back(stack: Stack, browser: Browser) -> None:
    customer = new_page(browser)
    customer.goto(stack.graph_url + "/")
    customer.fill("#phone", PHONE)
    customer.fill("#name", "Lucía")
    customer.click("#identity button")
    customer_says(customer, "I want to talk to a real person")
    expect(customer.locator(".bubble.theirs", has_text="passing you to a person")).to_be_visible()
    customer.screenshot(path=str(RESULTS / "console_1_customer_asks_for_a_person.png"))

    agent = new_page(browser, width=400, height=900)  # the console on a phone screen
    agent.goto(stack.console_url + "/")
    expect(agent).to_have_url(re.compile(r"/login"))
    agent.fill("input[name=email]", CONSOLE_ADMIN[0])
    agent.fill("input[name=password]", CONSOLE_ADMIN[1])
    agent.click("button[type=submit]")
    item = agent.locator(".queue .item", has_text="Lucía")
    expect(item).to_be_visible()  # the projector picked up the handoff
    expect(item).to_contain_text("customer_request")
    agent.screenshot(path=str(RESULTS / "console_2_queue.png"), full_page=True)

    item.click()
    expect(agent.locator("#reason")).to_have_text("customer_request")
    expect(agent.locator("#channel")).to_have_text("whatsapp")
    transcript = agent.locator("#transcript")
    expect(transcript.locator(".msg.customer", has_text="I want to talk to a real person")).to_be_visible()
    expect(transcript.locator(".nlu", has_text="human_handoff")).to_be_visible()  # NLU's reading inline
    agent.click("#claim")
    expect(agent.locator("#status")).to_have_text("assigned")
    agent.fill("#reply-text", "Hi Lucía, Administrator from Voltbay here. How can I help?")
    agent.click("#send")
    expect(agent.locator(".flash")).to_have_text("Sent.")
    expect(customer.locator(".bubble.theirs", has_text="Administrator from Voltbay here")).to_be_visible()
    agent.screenshot(path=str(RESULTS / "console_3_reply_sent.png"), full_page=True)

    customer_says(customer, "My order VB-310977 still has not arrived")
    # appears in the open conversation without a reload (SSE)
    expect(transcript.locator(".msg.customer", has_text="VB-310977 still has not arrived")).to_be_visible(
        timeout=15_000)
    expect(agent.locator(".msg.agent .ticks").first).to_be_visible()  # delivery ticks of the agent's reply
    customer.screenshot(path=str(RESULTS / "console_4_customer_answers.png"))
    assert not customer.locator(".bubble.theirs", has_text="didn't quite get that").count()  # the bot stayed quiet

    agent.fill("input[name=note]", "Told her the parcel is with the courier.")
    agent.click("#handback")
    expect(agent.locator(".flash")).to_contain_text("Handed back to the bot")
    expect(customer.locator(".bubble.theirs", has_text="chatting with the Voltbay assistant again")).to_be_visible()
    customer_says(customer, "hi")
    expect(customer.locator(".bubble.theirs .reply-button", has_text="Track my order").last).to_be_visible()
    customer.screenshot(path=str(RESULTS / "console_5_bot_answers_again.png"))
    agent.reload()
    expect(agent.locator("#transcript .msg.system", has_text="Handed back to the bot")).to_be_visible()
    agent.screenshot(path=str(RESULTS / "console_6_transcript_after_handback.png"), full_page=True)
    agent.context.close()
    customer.context.close()
