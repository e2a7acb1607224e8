"""The handoff policy's safety net: requests for a person hand over, mentions of people do not.

The examples are the issue's and the kinds it names; the net was tuned on data/nlu/ and is scored on
the blind set by make test-nlu.
"""

from __future__ import annotations

import pytest

from handoff.person_request import asks_for_person, mentions_without_asking

REQUESTS = [
    # imperative, angry, polite
    "HUMAN. NOW.", "rep please", "Hello, could you put me through to one of your colleagues?",
    "this is useless, I want a real human being", "i need a human, my phone was stolen and nothing here works",
    # indirect
    "can someone call me back", "can a person call me back?", "put me through to a colleague",
    "is anyone actually there?", "call me back please",
    # abbreviated
    "rep pls", "agent",
    # with a topic or a bot question
    "my bill is wrong again, get me a person", "my bill is wrong, get me a person",
    "i want to complain to a real person", "are you a bot? if so i want a real person",
    "are you a bot? i want a human", "i dont want to talk to a bot",
    # Spanish, Portuguese, German
    "Quero falar com um atendente, por favor", "pásame con una persona por favor",
    "Ich möchte bitte mit einem Mitarbeiter sprechen", "kannst du mich mit einem Kollegen verbinden?",
    "que me llame alguien", "alguém pode ligar-me?", "ist da überhaupt jemand?", "kann mich jemand zurückrufen?",
    "no quiero hablar con un bot", "PESSOA JÁ", "mensch bitte", "atencion al cliente por favor",
]
MENTIONS = [
    "my husband wants to know when the order arrives", "the guy in the shop said it was shipped",
    "no need for a person, just tell me the delivery time", "how do humans set up voicemail lol",
    "i'm a real person btw", "someone stole my phone", "the person at the service point was great",
    "my colleague ordered on monday", "here is my colleague's contact", "call this person", "call me a cab",
    "am I talking to a real person?", "when is customer service open", "customer service is terrible",
    "no, no necesito un humano", "soy una persona real", "el contacto de mi compañero",
    "nao preciso de uma pessoa, so diz o prazo", "sou uma pessoa real", "ich brauche keinen Menschen",
    "ich bin ein echter Mensch", "wer betreut mich hier", "bekommen eure Mitarbeiter Provision?",
    "", "/human_handoff", "👍", "ok",
]


@pytest.mark.parametrize("text", REQUESTS)
def test_a_request_for_a_person_is_recognised(text: str) -> None:
    assert asks_for_person(text)


@pytest.mark.parametrize("text", MENTIONS)
def test_a_mention_of_people_is_not_a_request(text: str) -> None:
    assert not asks_for_person(text)


def test_long_and_hostile_input_is_bounded() -> None:
    assert asks_for_person("agent please. " + "x" * 4000)  # the request is at the start
    assert not asks_for_person("x " * 5000 + "agent")  # past the first 1,000 characters
    assert not asks_for_person("\x00\u202e" * 2000)


@pytest.mark.parametrize(("text", "mention"), [
    ("i'm a real person btw", True), ("no i dont need a human", True), ("soy una persona real eh", True),
    ("nein, ich brauche keinen menschen", True), ("el contacto de mi compañero", True),
    ("no need for a person, just tell me the delivery time", True),
    ("get me a person", False), ("why can't I talk to a human?", False), ("i dont want a bot, i want a human", False),
    ("my husband wants to know when it arrives", False), ("", False), ("/human_handoff", False),
])
def test_a_person_named_but_not_asked_for(text: str, mention: bool) -> None:
    assert mentions_without_asking(text) is mention
