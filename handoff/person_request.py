"""Does a customer message ask for a person? A deterministic safety net in four languages.

NLU learns `human_handoff` from examples. This is the net under it, applied by the trigger policy
(rasa_components/handoff_policy.py) to every message, inside forms too, so that an explicit request
is never lost to a low confidence, to a topic that outweighs it ("my bill is wrong, get me a person")
or to a bot question ("are you a bot? i want a human").

A request is a *person word* governed by a *request*, in one clause of the message:
1. the clause is nothing but person words and politeness ("agent", "rep pls", "HUMAN. NOW.");
2. a request verb, then only bridging words, then a person word ("i want to talk to a real
   person", "pásame con alguien", "ich möchte mit einem Mitarbeiter sprechen");
3. a person word next to a verb of getting in touch: German's verb at the end ("mit einem Kollegen
   verbinden"), a person asked to call back or help ("can someone call me back?"), or available
   ("ist ein Mitarbeiter frei?"); a call-back asked for with nobody named ("call me back please");
4. a doubt that anyone is there ("is anyone actually there?", "ist da überhaupt jemand?");
5. a refusal of the bot ("i don't want to talk to a bot").

A mention is not a request: a negation before the person word ("no need for a person", "ich brauche
keinen Menschen"), a self-description ("i'm a real person btw") or a person word with no request
around it ("my colleague ordered on monday", "the person at the shop was nice") never hands over.
Only whole words count, after lower-casing and removing accents. Pure and stdlib-only: the Rasa
process and the evaluation scripts both import it.
"""

from __future__ import annotations

import re

from languages.text import plain_words
from languages.text import word_set as _words

# Someone who can take the conversation: en, es, pt, de (plurals as customers type them).
PERSON_WORDS = _words("""
    human humans person agent agents rep reps representative operator staff colleague colleagues supervisor
    manager advisor adviser someone somebody anyone anybody callback
    persona humano humana agente operador operadora alguien asesor asesora empleado empleada encargado
    encargada responsable companero companera gerente supervisora
    pessoa atendente assistente alguem funcionario funcionaria responsavel colega
    mensch menschen mitarbeiter mitarbeiterin mitarbeitern berater beraterin kundenberater jemand jemanden
    jemandem kollegen kollege kollegin chef chefin vorgesetzten vorgesetzte ansprechpartner kundenservice
    kundendienst wer
""")
# Several words that name one: joined into one token before matching.
PERSON_PHRASES = {
    "customer service": "customer_service", "customer support": "customer_service",
    "customer care": "customer_service", "support team": "customer_service", "member of staff": "staff",
    "staff member": "staff", "team member": "staff", "live chat": "customer_service",
    "atencion al cliente": "customer_service", "servicio al cliente": "customer_service",
    "apoio ao cliente": "customer_service", "atendimento humano": "customer_service",
    "servico de apoio": "customer_service", "through to support": "through to customer_service",
}
PERSON_TOKENS = PERSON_WORDS | {"customer_service"}
# Pronouns ("someone") are people only when asked to do something: "someone stole my phone" is no request.
PRONOUNS = _words("someone somebody anyone anybody alguien alguem jemand jemanden jemandem wer")

# Verbs and phrases that ask for something. Multi-word cues are joined like the person phrases.
REQUEST_WORDS = _words("""
    want wanna need needs get give let put transfer connect speak talk chat escalate like please pls plz
    wish prefer rather speaking talking hand
    quiero quisiera necesito pasame paseme pasar pases pasa pase ponme ponedme hablar habla atienda atiende
    transfiere transfiereme transferir transferirme porfa xfa favor prefiero
    quero queria preciso passa passe passar falar fala atenda atende transfere transferir chama chamar chame
    pfv pf atendido atendida prefiro
    will mochte moechte brauche verbinde verbinden verbindet sprechen reden schreiben weiterleiten leite
    ubergeben ubergib durchstellen stell stellt gib hol holt bitte lieber
""")
# A request that ends the clause ("mit einem Kollegen verbinden") or a person asked to get in touch.
CONTACT_WORDS = _words("""
    call phone ring contact reach callback help available
    llamame llamadme llamarme llame llamen llamar contactar contacte contactarme contacten atender ayudar
    ayude libre disponible hablar
    ligar ligue liguem ligam liga telefonar contactar contacto contato atende atender ajudar ajuda ajude
    disponivel falar
    anrufen zuruckrufen zuruckruft ruft melden verbinden sprechen reden ubergeben weiterleiten durchstellen
    helfen hilft frei betreut betreuen
""")
# Words that may stand between a request and its person: articles, prepositions, pronouns, adjectives,
# the verbs of talking and complaining.
BRIDGE_WORDS = _words("""
    a an the to with me my us through on one of your you some real actual actually live proper
    be being speak talk chat complain complaint make file put about i d id would like can could please
    support this it over
    un una uno el la los al con de del a me nos que con hablar quejarme queja poner reclamacion real esto
    verdad humano humana tuyo vuestro por favor puedo puedes podeis pueda
    um uma o os ao com de da do para pra me falar fazer reclamacao reclamar real verdade teu vosso
    posso podes pode ser por isto
    mit einem einer einen einem den dem der die ein eine mich mir bei zu echten echter echte richtigen
    bitte kann konnte mal beschweren sprechen reden
""")
# Politeness and emphasis: "agent pls", "HUMAN NOW", "mensch jetzt", "pessoa ja".
FILLER_WORDS = _words("""
    please pls plz now asap just a an the hello hi hey ok real live one thanks urgent to with
    por favor porfa xfa ya ahora hola un una con
    pfv pf ja agora ola oi um uma com
    bitte jetzt sofort hallo einen mit
""")
NEGATIONS = _words("""
    no not dont don t never without nobody none neither nor cant cannot wont
    ni sin ningun ninguna nadie nunca
    nao sem nenhum nenhuma ninguem nunca
    kein keine keinen keinem nicht ohne niemand nie
""")
# The negations that decline a person ("no need for", "don't need"); "can't" and "won't" are left out:
# "why can't I talk to a human?" is a request made in anger.
DECLINING = NEGATIONS - _words("cant cannot wont t")
SELF_WORDS = ("i m ", "im ", "i am ", "soy ", "sou ", "eu sou ", "ich bin ")
# "am I talking to a real person?" asks what the bot is (bot_challenge), not for a person.
ASKS_WHAT_BOT_IS = ("am i ", "are you ", "is this ", "estoy hablando", "hablo con", "estou a falar", "estou falando",
                    "falo com", "rede ich", "schreibe ich", "spreche ich")
# "my colleague's contact", "call this person", "el contacto de mi compañero": someone else, not us.
OWNERS = _words("""
    my his her their this that these those
    mi mis su sus este esta ese esa aquel aquella
    meu minha seu sua dele dela deste desta esse essa
    mein meine meinem meinen meiner sein seine ihr ihre diese dieser diesen diesem
""")
# Before a word, these make it a noun: "my phone", "the contact", "a call" are no request to get in touch.
NOUN_MARKERS = OWNERS | _words("a an the el la un una o um uma der die das ein eine")
BOTS = _words("bot robot chatbot machine maschine maquina robo roboter")
# "is anyone actually there", "hay alguien ahi de verdad", "tem alguem ai de verdade", "ist da uberhaupt jemand"
PRESENCE = re.compile(
    r"\b(?:is|are)\s+(?:there\s+)?(?:any(?:one|body)|some(?:one|body)|a\s+(?:real\s+)?(?:human|person))\s+"
    r"(?:actually|really|even|real|reading|there\s+(?:actually|really))"
    r"|\bis\s+there\s+(?:a|an)\s+(?:real|actual)\s+(?:person|human)"
    r"|\bis\s+there\s+(?:a|an|any)\s+(?:person|human|agent|one|someone|somebody|anyone)\s+(?:i|we)\s+can\s+"
    r"(?:talk|speak|chat)"
    r"|\b(?:any|some)(?:one|body)\s+(?:real|really|actually)\b"
    r"|\b(?:hay|ha)\s+(?:alguien|alguem)\s+(?:con\s+quien|com\s+quem)\s+(?:pueda|possa)\s+(?:hablar|falar)"
    r"|\b(?:hay|tem|ha)\s+(?:alguien|alguem)\s+(?:ahi|ai|ali|aqui)?\s*(?:de\s+verdad|de\s+verdade|real|realmente)"
    r"|\bist\s+(?:da|hier)\s+(?:uberhaupt|wirklich|echt)\s+(?:jemand|ein\s+mensch)")
# "call me back please", "llamadme", "liguem-me", "ruft mich bitte an": a call-back asked for, nobody named.
CALL_ME = re.compile(
    r"^(?:(?:please|pls|can you|could you|can u)\s+)*(?:call|phone|ring)\s+me(?:\s+back)?"
    r"(?:\s+(?:please|pls|asap|now|today))*$"
    r"|^(?:que\s+me\s+)?(?:llamadme|llamame|llameme|llamenme)\b|^que\s+me\s+llamen?\b"
    r"|^(?:liguem|ligue|liga)\s+me\b|^me\s+(?:liguem|ligue|liga)\b"
    r"|^(?:ruft?|rufen\s+sie)\s+mich\s+(?:bitte\s+)?(?:zuruck|an)\b|\bmich\s+(?:bitte\s+)?(?:zuruckrufen|anrufen)\b")
CLAUSE_BREAK = re.compile(r"[,.;:!?¿¡()\n]+|\s+(?:but|pero|mas|aber|and|y|e|und)\s+")


def _tokens(clause: str) -> list[str]:
    words = f" {plain_words(clause)} "
    for phrase, token in PERSON_PHRASES.items():
        words = words.replace(f" {phrase} ", f" {token} ")
    return words.split()


def _only_person_and_politeness(tokens: list[str]) -> bool:
    return any(t in PERSON_TOKENS and t not in PRONOUNS for t in tokens) and all(
        t in PERSON_TOKENS or t in FILLER_WORDS or t in REQUEST_WORDS for t in tokens)


def _negated_before(tokens: list[str], index: int) -> bool:
    return any(t in NEGATIONS for t in tokens[:index])


def _someone_else(tokens: list[str], index: int) -> bool:
    """A person word that names a third party: owned or pointed at ("my colleague", "this person"),
    possessive ("colleague's"), or German 'wer' opening a question ("wer betreut mich hier?")."""
    return ((index > 0 and tokens[index - 1] in OWNERS) or tokens[index + 1:index + 2] == ["s"]
            or (index == 0 and tokens[index] == "wer"))


def _request_then_person(tokens: list[str]) -> bool:
    for i, token in enumerate(tokens):
        if token not in REQUEST_WORDS:
            continue
        for j in range(i + 1, len(tokens)):
            if tokens[j] in PERSON_TOKENS:
                return not _negated_before(tokens, j) and not _someone_else(tokens, j)
            if tokens[j] not in BRIDGE_WORDS and tokens[j] not in REQUEST_WORDS:
                break
    return False


def _person_with_contact(tokens: list[str]) -> bool:
    """'a person call me back', 'alguien me puede contactar', 'que me llame alguien', 'mit einem Kollegen
    verbinden', 'ist ein Mitarbeiter frei?'. A possessive ("my colleague's contact") is no one to call."""
    for i, token in enumerate(tokens):
        if token not in PERSON_TOKENS or _negated_before(tokens, i) or _someone_else(tokens, i):
            continue
        window = range(max(0, i - 4), min(len(tokens), i + 6))
        if any(tokens[k] in CONTACT_WORDS and not (k > 0 and tokens[k - 1] in NOUN_MARKERS) for k in window):
            return True
    return False


def _refuses_bot(tokens: list[str]) -> bool:
    """'i dont want to talk to a bot', 'no quiero hablar con un bot', 'a real one please, not a bot'."""
    bot = next((i for i, t in enumerate(tokens) if t in BOTS), None)
    if bot is None:
        return False
    before = tokens[:bot]
    return any(t in NEGATIONS for t in before) and any(t in REQUEST_WORDS for t in before)


def _describes_self(clause: str) -> bool:
    return f"{plain_words(clause)} ".startswith(SELF_WORDS)


def asks_for_person(text: str) -> bool:
    """True when the message asks for a person (see the module docstring), in en, es, pt or de."""
    if not text or text.startswith("/"):
        return False
    text = text[:1000]
    words = plain_words(text)
    if PRESENCE.search(words) or _refuses_bot(words.split()):
        return True
    for clause in CLAUSE_BREAK.split(text):
        tokens = _tokens(clause)
        if not tokens or _describes_self(clause):
            continue
        asks_what_bot_is = f"{' '.join(tokens)} ".startswith(ASKS_WHAT_BOT_IS)
        if (CALL_ME.search(" ".join(tokens)) or _only_person_and_politeness(tokens)
                or (not asks_what_bot_is and _request_then_person(tokens)) or _person_with_contact(tokens)):
            return True
    return False


def mentions_without_asking(text: str) -> bool:
    """A person is named but not asked for: "no, I don't need a human", "i'm a real person btw",
    "my colleague's contact". NLU's `human_handoff` on such a message is a mistake
    (rasa_components/person_mention.py takes the next intent instead)."""
    if not text or text.startswith("/") or asks_for_person(text):
        return False
    for clause in CLAUSE_BREAK.split(text[:1000]):
        tokens = _tokens(clause)
        people = [i for i, token in enumerate(tokens) if token in PERSON_TOKENS]
        if people and (_describes_self(clause) or all(
                any(t in DECLINING for t in tokens[:i]) or _someone_else(tokens, i) for i in people)):
            return True
    return False
