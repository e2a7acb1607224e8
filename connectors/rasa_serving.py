"""Environment the Rasa server is started with to serve conversations (not to train): stdlib only, read by
`make run` (scripts/run.py, app env) and the test and bench stacks (tests/integration/harness.py).

TensorFlow's thread pools at one thread each. Rasa 3.6 runs every prediction on its event loop; for
a model of this size TensorFlow's pools only add hand-overs between threads. Measured on this 2-core
machine, REST alone, 4 stacks alternating, 3 rounds of 200 messages each: 5.70 against 5.27 msg/s
(medians), Rasa CPU 172 against 190 ms per message. And the second core is left to what runs beside
Rasa (the webhook receiver, the action server, the database). Rasa reads the two variables at start
(rasa.utils.tensorflow.environment); an operator's own values win. Training keeps TensorFlow's
defaults: these are not set for `rasa train`.
"""

from __future__ import annotations

from collections.abc import Mapping

SERVING_DEFAULTS = {"TF_INTRA_OP_PARALLELISM_THREADS": "1", "TF_INTER_OP_PARALLELISM_THREADS": "1"}


def serving_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the serving defaults filled in where it does not set them (an empty value counts as unset)."""
    return {**env, **{key: value for key, value in SERVING_DEFAULTS.items() if not env.get(key)}}
