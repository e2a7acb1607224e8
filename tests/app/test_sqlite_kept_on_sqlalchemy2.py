"""connectors/sqlite_kept.py is shared code: it runs on the app env's SQLAlchemy 2 as on Rasa's 1.4."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, bindparam, create_engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from connectors.sqlite_kept import KeptSqlite

metadata = MetaData()
things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("name", String(10), unique=True),
               Column("weight", Float))


@pytest.fixture
def kept(tmp_path: Path) -> KeptSqlite:
    engine = create_engine(f"sqlite:///{tmp_path / 'things.db'}")
    metadata.create_all(engine)
    return KeptSqlite(engine, on_connect=lambda _connection, _record: None)


def test_statements_with_built_in_in_lists_and_bound_limits_run(kept: KeptSqlite) -> None:
    with kept.begin() as conn:
        assert conn.execute(insert(things), {"name": "a", "weight": 1}).inserted_primary_key == (1,)
        conn.execute(insert(things), {"name": "c", "weight": 2.5})
    query = (select(things).where(things.c.name.in_(("a", "b"))).where(things.c.id > bindparam("after"))
             .limit(bindparam("few", type_=Integer)))
    with kept.connect() as conn:
        rows = conn.execute(query, {"after": 0, "few": 5}).all()
    assert [(row.id, row.name, row.weight) for row in rows] == [(1, "a", 1.0)]
    heavier = update(things).where(things.c.id == bindparam("row_id")).values(name="z", weight=things.c.weight + 1)
    with kept.begin() as conn:
        assert conn.execute(heavier, {"row_id": 1}).rowcount == 1
    with kept.connect() as conn:
        assert conn.execute(select(things.c.weight).where(things.c.name == "z")).scalar() == 2.0


def test_a_duplicate_rolls_the_block_back_as_sqlalchemys_error(kept: KeptSqlite) -> None:
    with pytest.raises(IntegrityError), kept.begin() as conn:
        conn.execute(insert(things), {"name": "a", "weight": 1})
        conn.execute(insert(things), {"name": "a", "weight": 2})
    with kept.connect() as conn:
        assert conn.execute(select(things)).all() == []
