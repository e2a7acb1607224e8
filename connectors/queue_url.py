"""Where the channels' queue (inbox and outbox tables) lives when WHATSAPP_INBOX_DB_URL does not say. Stdlib only:
the console (app env) finds the send records with the same rule.

On PostgreSQL: the tracker store's database. On SQLite: a file of its own next to the tracker's (`channel.db`).
Rasa's SQLite tracker store writes synchronously on its event loop; on a shared file it would wait there for
the write lock of a queue transaction that needs that same loop to finish, until Rasa's 5 s timeout.
"""

from __future__ import annotations

from pathlib import PurePosixPath

QUEUE_FILE = "channel.db"


def default_queue_url(tracker_url: str) -> str:
    """The queue's URL for a tracker store's SQLAlchemy URL."""
    if not tracker_url.startswith("sqlite"):
        return tracker_url
    scheme, _, path = tracker_url.partition(":///")
    if not path or path in (":memory:", "/:memory:"):
        return tracker_url
    return f"{scheme}:///{PurePosixPath(path).with_name(QUEUE_FILE)}"
