"""Our Rasa components: NLU components and the handoff trigger policy (listed in config.yml)."""

import logging as _logging
import warnings as _warnings

# Rasa loads SklearnIntentClassifier's SVM with skops, which imports numpy.distutils, whose import sets
# the root logger to WARNING: every INFO line of the server after the model loads would be lost
# ("Rasa server is up and running", the channel's start-up lines). Import it here first, before any
# model loads, and put the level back.
_level = _logging.getLogger().level
with _warnings.catch_warnings():
    _warnings.simplefilter("ignore")
    import numpy.distutils.log  # noqa: F401
_logging.getLogger().setLevel(_level)
