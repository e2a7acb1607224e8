"""SQLite's per-message statements on a kept connection, past SQLAlchemy's per-call machinery.

On SQLite a statement itself takes 20–70 µs; SQLAlchemy's pool checkout, execution context, cache
look-up, commit and check-in around it took ~200 µs more per call (measured: a row's completion
250 vs 40 µs; the four transactions of a WhatsApp message 1.5 vs 0.26 ms), all on Rasa's main
thread, where the turns run. Here each statement — the same SQLAlchemy construct a database server
runs — is compiled once to its SQL text and run through the sqlite3 driver on one connection per
thread, opened with the same pragmas as the engine's. Errors come out as SQLAlchemy's own
(`OperationalError`, `IntegrityError`), so callers and their retries do not tell the two apart.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

# Compiled statements kept per (statement, inserted columns): the inbox's statements are module constants.
MAX_COMPILED = 64


class CompiledStatement:
    """SQL text, the order of its parameters and what a parameter the caller leaves out stands for
    (SQLite's here; connectors/asyncpg_kept.py renders PostgreSQL's from it)."""

    def __init__(self, statement: ClauseElement, keys: tuple[str, ...] | None, dialect: Any,
                 for_executemany: bool = False) -> None:
        columns = list(keys) if keys is not None else None
        compiled = statement.compile(dialect=dialect, column_keys=columns, for_executemany=for_executemany)
        supplied = {bind.key for bind in compiled.binds.values() if bind.required}
        sql, names = compiled.string, list(compiled.positiontup or [])
        fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        if "__[POSTCOMPILE_" in sql:
            # IN lists built into the statement: rendered as plain placeholders, once. A list the
            # caller supplies would change the text on every call: not for this path.
            if any(bind.expanding and bind.required for bind in compiled.binds.values()):
                raise ValueError("a statement with an IN list given per call runs through SQLAlchemy")
            stand_ins = {key: _CALLERS for key in supplied}
            if hasattr(compiled, "construct_expanded_state"):  # SQLAlchemy 2 (the app env)
                expanded = compiled.construct_expanded_state(stand_ins)
                sql, names, fixed = expanded.statement, list(expanded.positiontup or []), expanded.parameters
            else:  # SQLAlchemy 1.4 (the Rasa env)
                rendered = statement.params(stand_ins).compile(dialect=dialect, column_keys=columns,
                                                               compile_kwargs={"render_postcompile": True})
                sql, names, fixed = rendered.string, list(rendered.positiontup or []), rendered.construct_params()
        self.sql: str = sql
        self.names: list[str] = names
        self.fixed = {name: value for name, value in fixed.items() if value is not _CALLERS and name not in supplied}
        # The SQL type of each parameter (None: a value built into the statement's IN list).
        self.types = [compiled.binds[name].type if name in compiled.binds else None for name in self.names]
        self.converters: list[Callable[[Any], Any] | None] = [
            kind.bind_processor(dialect) if kind is not None else None for kind in self.types]
        # Rows come back from a query or a write's RETURNING clause; told from the SQL itself, as a
        # text() statement says nothing else about it.
        verb = sql.split(None, 1)[0].upper() if sql.strip() else ""
        self.returns_rows = verb in ("SELECT", "WITH", "VALUES") or " RETURNING " in sql.upper()
        self._row_type: Any = None
        for column in getattr(statement, "selected_columns", ()):
            if self.converts_results(column, dialect):
                raise ValueError(f"column {column} needs SQLAlchemy's conversion of its values")

    def converts_results(self, column: Any, dialect: Any) -> bool:
        return column.type.result_processor(dialect, None) is not None

    def row_type(self, description: Any) -> Any:
        """Rows by column name: the type is made from the first answer's columns, then kept."""
        if self._row_type is None:
            self._row_type = namedtuple("KeptRow", [column[0] for column in description], rename=True)  # type: ignore[misc]
        return self._row_type

    def values(self, parameters: Mapping[str, Any]) -> list[Any]:
        values = []
        for name, convert in zip(self.names, self.converters, strict=True):
            if name in parameters:
                value = parameters[name]
            elif name in self.fixed:
                value = self.fixed[name]
            else:
                raise KeyError(f"no value for the statement's parameter {name!r}")
            values.append(convert(value) if convert is not None and value is not None else value)
        return values


_CALLERS = object()  # stands for a value the caller gives, while a statement is compiled

Compiled = TypeVar("Compiled", bound=CompiledStatement)


def compiled_once(cache: dict[Any, Compiled], lock: threading.Lock, statement: ClauseElement,
                  parameters: Mapping[str, Any], compile_: Callable[[tuple[str, ...] | None], Compiled]) -> Compiled:
    """A statement's compiled form from `cache`, compiled on first use (an insert per set of columns given)."""
    keys = tuple(parameters) if getattr(statement, "is_insert", False) else None
    found = cache.get((statement, keys))
    if found is None:
        found = compile_(keys)
        with lock:
            if len(cache) >= MAX_COMPILED:
                cache.clear()  # statements built per call do not belong here; never grow
            cache[(statement, keys)] = found
    return found


class KeptResult:
    """The part of SQLAlchemy's Result the inbox uses: rows by column name, first(), scalar(), counts."""

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows
        self.rowcount = rowcount
        self.inserted_primary_key = (lastrowid,)

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]

    def all(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class KeptConnection:
    def __init__(self, owner: KeptSqlite, dbapi_connection: Any) -> None:
        self._owner = owner
        self._dbapi = dbapi_connection

    def execute(self, statement: ClauseElement, parameters: Mapping[str, Any] | None = None) -> KeptResult:
        parameters = parameters or {}
        compiled = self._owner.compiled(statement, parameters)
        values = compiled.values(parameters)
        try:
            cursor = self._dbapi.execute(compiled.sql, values)
            rows = cursor.fetchall() if cursor.description else []
        except self._owner.dbapi.Error as error:
            raise DBAPIError.instance(compiled.sql, values, error, self._owner.dbapi.Error) from error
        if rows:
            row_type = compiled.row_type(cursor.description)
            rows = [row_type._make(row) for row in rows]
        return KeptResult(rows, cursor.rowcount, cursor.lastrowid)

    @contextmanager
    def begin_nested(self) -> Iterator[KeptConnection]:
        """A savepoint inside the transaction: what the block did is undone when it raises."""
        self._dbapi.execute("SAVEPOINT kept_nested")
        try:
            yield self
        except BaseException:
            self._dbapi.execute("ROLLBACK TO SAVEPOINT kept_nested")
            raise
        finally:
            self._dbapi.execute("RELEASE SAVEPOINT kept_nested")


class KeptSqlite:
    """One sqlite3 connection per thread on an engine's SQLite file, for its hot statements."""

    def __init__(self, engine: Engine, on_connect: Callable[[Any, Any], None]) -> None:
        self.dialect = engine.dialect
        self.dbapi = engine.dialect.dbapi
        self._connect_args = engine.dialect.create_connect_args(engine.url)
        self._on_connect = on_connect
        self._local = threading.local()
        self._opened: list[Any] = []  # one per thread that used it (the event loop's, mostly)
        self._compiled: dict[tuple[ClauseElement, tuple[str, ...] | None], CompiledStatement] = {}
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            args, kwargs = self._connect_args
            # Autocommit in the driver: transactions are this class's explicit BEGIN … COMMIT.
            connection = self.dbapi.connect(*args, **{**kwargs, "isolation_level": None,
                                                      "check_same_thread": False})
            self._on_connect(connection, None)
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def compiled(self, statement: ClauseElement, parameters: Mapping[str, Any]) -> CompiledStatement:
        return compiled_once(self._compiled, self._lock, statement, parameters,
                             lambda keys: CompiledStatement(statement, keys, self.dialect))

    @contextmanager
    def begin(self) -> Iterator[KeptConnection]:
        """A transaction: committed when the block ends, rolled back when it raises."""
        connection = self._connection()
        kept = KeptConnection(self, connection)
        try:
            connection.execute("BEGIN")
        except self.dbapi.Error as error:
            raise DBAPIError.instance("BEGIN", (), error, self.dbapi.Error) from error
        try:
            yield kept
            connection.execute("COMMIT")
        except BaseException as failure:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if isinstance(failure, self.dbapi.Error):
                raise DBAPIError.instance("COMMIT", (), failure, self.dbapi.Error) from failure
            raise

    @contextmanager
    def connect(self) -> Iterator[KeptConnection]:
        """Reads, each statement on its own."""
        yield KeptConnection(self, self._connection())

    def close(self) -> None:
        with self._lock:
            opened = list(self._opened)
            self._opened.clear()
        for connection in opened:
            connection.close()
        self._local = threading.local()
