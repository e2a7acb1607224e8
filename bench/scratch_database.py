"""A PostgreSQL database of a bench's own: made on the server `admin_url` reaches, dropped at the end.

SQLAlchemy 1.4 (the Rasa env) and 2.x (the app env) alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """Yield the URL of a new, empty database named `prefix` + a random suffix; drop it (and end its
    sessions) afterwards, whatever happened."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"  # a generated name, never input
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
