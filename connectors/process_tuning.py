"""Tuning of the Rasa process the channels run in: the loaded model kept out of the garbage collector's way.

Once its model is loaded a Rasa server tracks about a million container objects (TensorFlow,
the pipeline, the domain). Python's full collection walks every one of them — 0.56 s measured on
this project's model — while the event loop stands still: every conversation in flight, the
webhook route and the inbox worker. Under load one runs about every minute. `gc.freeze()` moves
what exists once the model is loaded into a permanent generation that collections skip (a full
collection then takes under a millisecond); everything created later is collected as before.
A model swapped in later through Rasa's HTTP API is not frozen (its predecessor's reference
cycles then stay in memory): restart the server to deploy a model.
"""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from connectors.settings import switched_on

logger = logging.getLogger(__name__)


def gc_freeze_enabled() -> bool:
    return switched_on(os.environ.get("RASA_GC_FREEZE", "true"))


def freeze_loaded_model(agent: Any) -> bool:
    """Freeze what the process holds once the agent has its model (once per process); True if it did."""
    if not gc_freeze_enabled() or gc.get_freeze_count() > 0:
        return False
    if agent is None or not getattr(agent, "is_ready", lambda: False)():
        return False  # nothing worth freezing yet (no model): leave the collector alone
    gc.collect()  # what is garbage now must not be frozen with the rest
    gc.freeze()
    logger.info("froze %d objects of the loaded model out of the garbage collector's full passes",
                gc.get_freeze_count())
    return True
