"""The inbox's per-message statements, built once with bound parameters.

Building a Core statement on every call cost ~0.25 ms of Python each (measured: 285 µs built vs
39 µs prebuilt for the claim's SELECT), about 80 % of a worker transaction, all of it holding
the Rasa process's GIL that model inference needs. Statements are immutable: one copy serves
every thread. Bound parameter names differ from the column names they set (SQLAlchemy reserves
those in UPDATE … SET).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Integer, String, Text, and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from connectors.inbox_tables import DONE, PENDING, PROCESSING, inbox, leases, menus, outbound, statuses
from connectors.inbox_wakeups import WAKE_CHANNEL


def _on_channel(condition: ColumnElement[bool], with_channel: bool) -> ColumnElement[bool]:
    return and_(condition, inbox.c.channel == bindparam("on_channel")) if with_channel else condition


KNOWN_IDS = select(inbox.c.message_id).where(inbox.c.message_id.in_(bindparam("ids", expanding=True)))
INSERT_MESSAGES = insert(inbox)
INSERT_STATUSES = insert(statuses)


# PostgreSQL column types of the arrays a webhook's messages travel in (one array per column).
_PG_ARRAY_TYPES = {Integer: "integer", Float: "double precision", String: "varchar", Text: "text"}
_NEW_MESSAGE_COLUMNS = [column for column in inbox.columns if not column.primary_key]


def _array_type(column: Any) -> str:
    return next(name for kind, name in _PG_ARRAY_TYPES.items() if type(column.type) is kind)


# PostgreSQL: insert the rows whose message id is new, NOTIFY "channel:conversation" for each, return the
# new ids; one statement, built once. The rows travel as one array per column (unnest keeps their order),
# so any number of messages shares this text: a statement built from a webhook's VALUES was compiled
# anew for each webhook (its ON CONFLICT clause has no cache key in SQLAlchemy 1.4), 3 of the ingest's
# 4.5 ms of CPU per webhook. The SQL is put together from our own table's column names, never from input.
INSERT_NEW_MESSAGES = text(
    "WITH new_messages AS ("
    f" INSERT INTO {inbox.name} ({', '.join(c.name for c in _NEW_MESSAGE_COLUMNS)})"
    " SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c.name} AS {_array_type(c)}[])" for c in _NEW_MESSAGE_COLUMNS)
    + ") ON CONFLICT (message_id) DO NOTHING RETURNING message_id, channel, conversation_id)"
    " SELECT message_id, pg_notify(:wake_channel, channel || ':' || conversation_id) FROM new_messages"
)


def new_messages_parameters(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of INSERT_NEW_MESSAGES as its parameters: a list of values per column."""
    return {"wake_channel": WAKE_CHANNEL, **{c.name: [row[c.name] for row in rows] for c in _NEW_MESSAGE_COLUMNS}}


LATEST_ID = select(func.max(inbox.c.id))
# {with a channel filter?: the conversations of the pending rows stored after a row id}
CONVERSATIONS_SINCE = {
    with_channel: select(inbox.c.conversation_id)
    .where(_on_channel(and_(inbox.c.id > bindparam("after_id"), inbox.c.state == PENDING), with_channel))
    .distinct()
    for with_channel in (False, True)
}

SET_STATE = (
    update(inbox)
    .where(inbox.c.id == bindparam("row_id"))
    .values(state=bindparam("new_state"), updated_at=bindparam("now"))
)

# {with a channel filter?: the conversation's oldest unfinished rows, `few` of them}. Run under the
# conversation's lease, so a row still "processing" is one a dead worker left: it comes first again (in
# its place), unless it is one of this worker's own whose replies are still going out (the caller skips
# those: `few` = how many there are + 1; an id list in the SQL would make every call's text new).
NEXT_UNFINISHED = {
    with_channel: select(inbox)
    .where(_on_channel(and_(inbox.c.conversation_id == bindparam("conversation"),
                            inbox.c.state.in_((PENDING, PROCESSING))), with_channel))
    .order_by(inbox.c.sent_at, inbox.c.id)
    .limit(bindparam("few", type_=Integer))
    for with_channel in (False, True)
}
_UNFINISHED = f"state IN ('{PENDING}', '{PROCESSING}')"


def _next_row(with_channel: bool, besides: str = "") -> str:
    """PostgreSQL: the CTE of the conversation's oldest unfinished row (as NEXT_UNFINISHED) besides some."""
    return (f"next_row AS (SELECT id FROM {inbox.name} WHERE conversation_id = :conversation AND {_UNFINISHED}"
            + (" AND channel = :on_channel" if with_channel else "") + besides + " ORDER BY sent_at, id LIMIT 1)")


# Rasa's SQL tracker store's table (SQLTrackerStore.SQLEvent, "events"): a conversation is with a person
# while its last pause or resume event is a pause. Indexed by sender_id.
LAST_PAUSE_OR_RESUME = ("SELECT type_name FROM events WHERE sender_id = {sender} AND type_name IN ('pause', 'resume')"
                        " ORDER BY id DESC LIMIT 1")


def _claimed_with_menu(lease_cte: str, with_pause: bool) -> str:
    """PostgreSQL: mark `next_row` processing when the `lease_cte` row came back, and return it with the
    stored menu, or one row of NULLs; `renewed` says whether the lease is held. The state is checked again
    in the UPDATE: a row finished since the statement's snapshot is re-read there (PostgreSQL re-checks an
    UPDATE's conditions on a row changed meanwhile) and not claimed. `with_pause`: Rasa's tracker store is
    in this database, and `last_pause` answers the read receipt's question (typing or not) in this round trip."""
    pause = f", ({LAST_PAUSE_OR_RESUME.format(sender='claimed.conversation_id')}) AS last_pause" if with_pause else ""
    return (f" claimed AS (UPDATE {inbox.name} SET state = '{PROCESSING}', attempts = {inbox.name}.attempts + 1,"
            f" updated_at = :now FROM next_row WHERE {inbox.name}.id = next_row.id AND {inbox.name}.{_UNFINISHED}"
            f" AND EXISTS (SELECT 1 FROM {lease_cte}) RETURNING {inbox.name}.*)"
            f" SELECT (SELECT count(*) FROM {lease_cte}) AS renewed, {menus.name}.menu AS stored_menu{pause}, claimed.*"
            f" FROM (SELECT 1) AS one LEFT JOIN claimed ON true LEFT JOIN {menus.name}"
            f" ON {menus.name}.conversation_id = claimed.conversation_id AND {menus.name}.channel = claimed.channel")


# PostgreSQL: the CTE that marks done the rows whose replies went out since the drain's last statement
# (`finished`, an id array); the statement's look for the next row leaves them out itself.
_FINISHED = (f"done AS (UPDATE {inbox.name} SET state = '{DONE}', updated_at = :now"
             " WHERE id = ANY(CAST(:finished AS integer[]))),")
_NOT_FINISHED = " AND id <> ALL(CAST(:finished AS integer[]))"


# PostgreSQL: the CTEs that save the handled turn's menu (`advance` with `saves_menu`): the options it
# offered (JSON) replace the stored ones, or NULL clears them. The statement's own join still reads the menu
# it started with; the caller returns the menu it saved.
_SAVE_MENU = (f" menu_saved AS (INSERT INTO {menus.name} (conversation_id, channel, menu, updated_at)"
              " SELECT CAST(:conversation AS varchar), CAST(:menu_channel AS varchar), CAST(:menu AS text),"
              " CAST(:now AS double precision) WHERE CAST(:menu AS text) IS NOT NULL"
              " ON CONFLICT (conversation_id, channel) DO UPDATE SET menu = excluded.menu,"
              " updated_at = excluded.updated_at),"
              f" menu_cleared AS (DELETE FROM {menus.name} WHERE conversation_id = :conversation"
              " AND channel = :menu_channel AND CAST(:menu AS text) IS NULL),")


# PostgreSQL: `Inbox.advance` in one statement (autocommit) instead of five to seven round trips (BEGIN,
# the menu's delete and insert when the turn offered options or cleared them, lease renewal, look-up,
# mark, COMMIT): save the menu when asked (whatever became of the lease, as the transaction did), renew
# the lease (0 rows: lost, nothing is claimed), take the oldest unfinished row besides this worker's own
# still replying (an id array: one text for every call) and return it marked, with the conversation's
# stored menu; the rows in `finished` are marked done with it (whatever became of the lease). The lease
# was held all along, so nobody else changed the conversation's rows; a row stored after the statement's
# snapshot is left to the next look, as when it is stored just after the transaction. A menu saved in the
# transaction cost the turns that offered or cleared options (0.6 of the bench's messages) six round
# trips, and the read receipt a seventh (only the one statement answers its pause question).
# Names are our own, never input.
# {(with a channel filter?, with the receipt's pause question?, saving the menu?): the statement}
ADVANCE_ON_POSTGRESQL = {
    (with_channel, with_pause, saves_menu): text(
        f"WITH {_FINISHED}{_SAVE_MENU if saves_menu else ''} renewed AS (UPDATE {leases.name}"
        " SET expires_at = :lease_until"
        " WHERE channel = :lease_channel AND conversation_id = :conversation AND owner = :lease_owner RETURNING 1), "
        + _next_row(with_channel, " AND id <> ALL(CAST(:besides AS integer[]))" + _NOT_FINISHED
                    + " AND EXISTS (SELECT 1 FROM renewed)")
        + "," + _claimed_with_menu("renewed", with_pause)
    )
    for with_channel in (False, True) for with_pause in (False, True) for saves_menu in (False, True)
}
# PostgreSQL: `Inbox.claim_next` in one statement instead of five or six round trips (BEGIN, lease,
# look-up, mark, menu or lease given back, COMMIT). The look comes first, from the statement's snapshot:
# with a row to answer the lease is taken (free, expired or ours) and the row marked; with none, our
# lease is given back (the two writes exclude each other: one statement may not change a row twice).
# The lease's last holder may have finished that row after the snapshot (it gives the lease back in the
# commit that finishes it): the UPDATE's own state check sees that, and the caller, holding the lease
# with nothing claimed, looks again in a transaction. A row stored after the snapshot is announced to
# the worker, whose drain then starts again, as when it is stored just after the transaction. The rows
# in `finished` are marked done with it: a drain's last claim ends its last turn and gives the lease back.
CLAIM_ON_POSTGRESQL = {
    (with_channel, with_pause): text(
        f"WITH {_FINISHED} " + _next_row(with_channel, _NOT_FINISHED) + ","
        f" taken AS (INSERT INTO {leases.name} (channel, conversation_id, owner, expires_at)"
        " SELECT CAST(:lease_channel AS varchar), CAST(:conversation AS varchar), CAST(:lease_owner AS varchar),"
        " CAST(:lease_until AS double precision) WHERE EXISTS (SELECT 1 FROM next_row)"
        " ON CONFLICT (channel, conversation_id) DO UPDATE SET owner = excluded.owner,"
        f" expires_at = excluded.expires_at WHERE {leases.name}.expires_at < :lease_now"
        f" OR {leases.name}.owner = :lease_owner RETURNING 1),"
        f" given_back AS (DELETE FROM {leases.name} WHERE channel = :lease_channel"
        " AND conversation_id = :conversation AND owner = :lease_owner AND NOT EXISTS (SELECT 1 FROM next_row)),"
        + _claimed_with_menu("taken", with_pause)
    )
    for with_channel in (False, True) for with_pause in (False, True)
}
MARK_PROCESSING = (
    update(inbox)
    .where(inbox.c.id == bindparam("row_id"))
    .values(state=PROCESSING, attempts=inbox.c.attempts + 1, updated_at=bindparam("now"))
)

_THIS_MENU = and_(menus.c.conversation_id == bindparam("conversation"), menus.c.channel == bindparam("on_channel"))
MENU = select(menus.c.menu).where(_THIS_MENU)
DELETE_MENU = menus.delete().where(_THIS_MENU)
INSERT_MENU = insert(menus)

INSERT_OUTBOUND = insert(outbound)
# {clear the turn key too? (a refused free-form message): how a send ended}
FINISH_OUTBOUND = {
    clear_turn_key: update(outbound)
    .where(outbound.c.id == bindparam("row_id"))
    .values(**{name: bindparam(f"new_{name}") for name in ("message_id", "state", "error_code", "error")},
            **({"turn_key": None} if clear_turn_key else {}))
    for clear_turn_key in (False, True)
}

# --- leases (connectors/inbox_leases.py) --------------------------------------
_THIS_LEASE = and_(leases.c.channel == bindparam("lease_channel"),
                   leases.c.conversation_id == bindparam("conversation"))


# A lease can be taken when it has expired or is already ours.
_FREE_OR_OURS = or_(leases.c.expires_at < bindparam("lease_now"), leases.c.owner == bindparam("lease_owner"))
_NEW_LEASE = {"channel": bindparam("lease_channel"), "conversation_id": bindparam("conversation"),
              "owner": bindparam("lease_owner"), "expires_at": bindparam("lease_until")}


# Take the lease when there is none or it is free or ours: one statement, rowcount 1 when taken. The same
# text on SQLite (3.24+) and PostgreSQL; SQLAlchemy's own upsert construct has no cache key in 1.4, so it
# was compiled anew on every claim (claim + completion 1.43 -> 1.11 ms of the Rasa process's CPU, SQLite).
_ACQUIRE_LEASE = text(
    f"INSERT INTO {leases.name} (channel, conversation_id, owner, expires_at)"
    " VALUES (:lease_channel, :conversation, :lease_owner, :lease_until)"
    " ON CONFLICT (channel, conversation_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at"
    f" WHERE {leases.name}.expires_at < :lease_now OR {leases.name}.owner = :lease_owner"
)
# {dialect: the upsert}; other dialects take the portable UPDATE-then-INSERT (LeaseRecords._take_lease).
ACQUIRE_LEASE = {"sqlite": _ACQUIRE_LEASE, "postgresql": _ACQUIRE_LEASE}
TAKE_FREE_LEASE = (update(leases).where(and_(_THIS_LEASE, _FREE_OR_OURS))
                   .values(owner=bindparam("lease_owner"), expires_at=bindparam("lease_until")))
INSERT_LEASE = insert(leases).values(**_NEW_LEASE)
# Renewing one's lease also locks its row (PostgreSQL) until the transaction ends; rowcount 0: lost.
RENEW_LEASE = (update(leases).where(and_(_THIS_LEASE, leases.c.owner == bindparam("lease_owner")))
               .values(expires_at=bindparam("lease_until")))
DROP_LEASE = leases.delete().where(and_(_THIS_LEASE, leases.c.owner == bindparam("lease_owner")))
# The heartbeat and the goodbye of a worker: every lease it holds.
RENEW_MY_LEASES = update(leases).where(leases.c.owner == bindparam("lease_owner")).values(
    expires_at=bindparam("lease_until"))
DROP_MY_LEASES = leases.delete().where(leases.c.owner == bindparam("lease_owner"))
