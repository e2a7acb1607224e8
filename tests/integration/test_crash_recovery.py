"""kill -9 of the Rasa server with 50 ACKed messages per channel in flight: each answered exactly once.

Both channels share one crash (one restart of Rasa costs a minute on the CI machines).
"""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import Stack, text_webhook, wait_for
from .test_evolution_live import texts, upsert

pytestmark = pytest.mark.integration


def inbox_states(stack: Stack) -> dict[str, int]:
    with sqlite3.connect(stack.workdir / "channel.db") as conn:
        return dict(conn.execute("SELECT state, COUNT(*) FROM wa_inbox GROUP BY state").fetchall())


def test_kill_9_with_50_acked_messages_per_channel_answers_each_exactly_once(stack: Stack) -> None:
    users = [f"3461300{n:04d}" for n in range(50)]
    jids = [f"3462400{n:04d}@s.whatsapp.net" for n in range(50)]
    with ThreadPoolExecutor(10) as pool:
        cloud = list(pool.map(stack.post_webhook, [text_webhook(u, f"wamid.crash.{n}", "hi")
                                                   for n, u in enumerate(users)]))
        evolution = list(pool.map(stack.post_evolution, [upsert(j, f"EVO.CRASH.{n}", "hi")
                                                         for n, j in enumerate(jids)]))
    assert cloud == [200] * 50 and evolution == [200] * 50  # all ACKed, i.e. stored
    stack.kill_rasa()
    answered_before = sum(1 for u in users if stack.sent_to(u)) + sum(1 for j in jids if texts(stack, j))
    stack.start_rasa()
    wait_for(lambda: all(stack.sent_to(u) for u in users) and all(texts(stack, j) for j in jids), 240,
             what="all 100 answered after restart")
    time.sleep(3)
    duplicates = {u: n for u in users if (n := len(stack.sent_to(u))) != 1}
    duplicates.update({j: n for j in jids if (n := len(texts(stack, j))) != 1})
    assert duplicates == {}
    states = inbox_states(stack)
    assert states.get("processing", 0) == 0 and states.get("pending", 0) == 0
    print(f"answered before kill -9: {answered_before}/100")
