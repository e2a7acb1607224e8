"""Tuning of the Rasa process the channels run in: the loaded model kept out of the garbage collector's
way, and the action server's answers checked against a schema compiled once.

Garbage collector: once its model is loaded a Rasa server tracks about a million container objects
(TensorFlow, the pipeline, the domain). Python's full collection walks every one of them — 0.56 s
measured on this project's model — while the event loop stands still: every conversation in flight,
the webhook route and the inbox worker. Under load one runs about every minute. `gc.freeze()` moves
what exists once the model is loaded into a permanent generation that collections skip (a full
collection then takes under a millisecond); everything created later is collected as before.
A model swapped in later through Rasa's HTTP API is not frozen (its predecessor's reference
cycles then stay in memory): restart the server to deploy a model.

Action results: Rasa 3.6 checks every custom action's answer with `jsonschema.validate`, which
first checks Rasa's own constant response schema against JSON Schema's metaschema — 67 ms per
call measured on this machine, against 1.2 ms for checking the answer alone, and about 45 % of the
main thread's time per message in a py-spy profile (REST and WhatsApp alike). The answer is still
checked against the same schema, with the same error and message; only the schema's own check runs
once per process.
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


def schema_checked_once_enabled() -> bool:
    return switched_on(os.environ.get("RASA_ACTION_SCHEMA_CHECKED_ONCE", "true"))


def check_action_results_with_compiled_schema() -> bool:
    """Replace RemoteAction._validate_action_result by one with a validator built once per schema;
    True if it did (once per process, and only when switched on)."""
    from jsonschema import exceptions, validators
    from rasa.core.actions.action import RemoteAction
    from rasa.shared.constants import DOCS_BASE_URL

    if not schema_checked_once_enabled() or hasattr(RemoteAction._validate_action_result, "rasa_original"):
        return False
    compiled: dict[Any, Any] = {}

    def validator_of(action: Any) -> Any:
        # Keyed by the class's schema function (a subclass may give a schema of its own): the
        # schema is built and checked on the first answer only, not rebuilt per call.
        spec = type(action).action_response_format_spec
        if spec not in compiled:
            schema = action.action_response_format_spec()
            cls = validators.validator_for(schema)
            cls.check_schema(schema)  # a broken schema still fails here, as it did on every call
            compiled[spec] = cls(schema)
        return compiled[spec]

    def _validate_action_result(self: Any, result: dict[str, Any]) -> bool:
        error = exceptions.best_match(validator_of(self).iter_errors(result))
        if error is not None:
            # Rasa's own wording (rasa/core/actions/action.py), so logs and docs still match.
            error.message += (
                ". Failed to validate Action server response from API, make sure your response from the "
                f"Action endpoint is valid. For more information about the format visit {DOCS_BASE_URL}/custom-actions"
            )
            raise error
        return True

    _validate_action_result.rasa_original = RemoteAction._validate_action_result  # type: ignore[attr-defined]
    RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
    logger.info("action server answers are checked against a schema compiled once (RASA_ACTION_SCHEMA_CHECKED_ONCE)")
    return True
