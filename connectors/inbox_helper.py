"""The inbox's statements and sends in a helper process: WHATSAPP_INBOX_CALLS=process (on a SQLite file
only the sends: a statement there costs less than the hop).

Rasa's event loop runs every turn's Python on one thread, and that thread is what bounds a Rasa
server's throughput. Through asyncpg on that loop (`async`) each of a message's statements still
costs it ~120–240 µs of CPU (the greenlet, the kept connection, asyncpg's protocol, the result:
bench/inbox_statements.py), and a thread would take the same CPU under the same GIL. Here a child
process that this one starts runs the same `Inbox` methods (through asyncpg on its own loop) on the
machine's other core; Rasa's loop only writes the call to a pipe and reads its result back.

It also sends replies for Rasa (`Inbox.record_and_send`): a client that can say how it was built
(`RetryingSender.helper_spec`: the Cloud API's, built from settings) is built again in the child, and a
reply's record, request and outcome become one call there (`connectors.delivery`), its read receipt
one unanswered frame. Order stays Rasa's: the conversation's send chain awaits each call in turn.

The child is this process's, nobody else's: it reads length-prefixed pickled calls from its stdin
and answers on its stdout, it takes the leases in this process's name (`WorkerIdentity`, so
lease take-over after a crash works as before), and it exits when its stdin closes — when this
process stops or dies (`kill -9` included), after the statements it has in hand. Only the public
`Inbox` methods can be called. A child that died is started again and the calls it had in hand
run once more there, as `retry_transient` does after a dropped database connection; a second
death fails them (`InboxHelperGone`). A call whose
awaiting task was cancelled still runs to its end in the child: what it wrote stands (a claim
is taken up again after a restart, as after a crash).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import pickle
import struct
import sys
from typing import Any

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
# A call or result beyond this is refused, not sent: the inbox's largest values are a message's JSON
# (a webhook body is at most 3 MB) and a reply's payload.
MAX_FRAME_BYTES = 64 * 1024 * 1024
_SET = "__set__"  # (attribute, value): an attribute of the child's inbox set, no answer
_SENDER = "__sender__"  # (key, spec): how to build a client the child sends for, no answer
_SEND = "__send__"  # (key, record, payload, template): connectors.delivery.record_and_send with that client
_RECEIPT = "__receipt__"  # (key, business id, message id, reply to, typing): a read receipt, no answer
_CLOSE_WAIT_SECONDS = 10.0
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # where `connectors` is importable from


class InboxHelperGone(ConnectionError):
    """The helper process ended (or could not start) with the call unanswered."""


class InboxHelperError(RuntimeError):
    """A call's error that could not be carried back as itself (its text is kept)."""


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_FRAME_BYTES:
        raise ValueError(f"an inbox call of {len(data)} bytes is over the helper's {MAX_FRAME_BYTES}-byte limit")
    return _LENGTH.pack(len(data)) + data


class _Frames:
    """Splits a byte stream into the frames `_frame` made."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"inbox helper frame of {size} bytes is over the limit")
            end = _LENGTH.size + size
            if len(self._buffer) < end:
                break
            frames.append(pickle.loads(self._buffer[_LENGTH.size:end]))
            del self._buffer[:end]
        return frames


class _ParentSide(asyncio.SubprocessProtocol):
    def __init__(self, helper: InboxHelper) -> None:
        self.helper = helper
        self.frames = _Frames()
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        try:
            answers = self.frames.feed(data)
        except Exception as error:  # not our child's framing: nothing it says can be trusted any more
            self.helper._gone(self.transport, f"unreadable answer: {error}")
            return
        for call_id, ok, value in answers:
            self.helper._answered(call_id, ok, value)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.helper._gone(self.transport, "its output closed")

    def process_exited(self) -> None:
        self.helper._gone(self.transport, "it exited")


class InboxHelper:
    """Rasa's side: starts the child on the first call, sends it calls, hands back results and errors."""

    def __init__(self, url: str, identity: Any, lease_seconds: float) -> None:
        self._start_with = (url, identity, lease_seconds)
        self._attributes: dict[str, Any] = {}
        self._senders: dict[tuple[Any, ...], str] = {}  # a client's spec → its key in the child
        self._transport: asyncio.SubprocessTransport | None = None
        self._starting: asyncio.Future[None] | None = None
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 1

    def set(self, attribute: str, value: Any) -> None:
        """Set an attribute of the child's inbox (now if it runs, at its start otherwise)."""
        self._attributes[attribute] = value
        if self._transport is not None:
            self._write((0, _SET, (attribute, value)))

    def sender_key(self, client: Any) -> str | None:
        """The key under which the child sends for `client` (told how to build it the first time); None: the
        child cannot build it, the caller sends."""
        spec = client.helper_spec()
        if spec is None:
            return None
        key = self._senders.get(spec)
        if key is None:
            key = self._senders[spec] = f"sender{len(self._senders) + 1}"
            if self._transport is not None:
                self._write((0, _SENDER, (key, spec)))
        return key

    async def record_and_send(self, sender: str, record: dict[str, Any], payload: dict[str, Any],
                              template: dict[str, Any] | None) -> Any:
        """connectors.delivery.record_and_send in the child. Not run again in a new child when the first died
        with it in hand: the request may have left, and only the record can tell (the row stays "sending"
        until the message is taken up again, as after a crash)."""
        return await self._call_once(_SEND, (sender, record, payload, template))

    def start_record_and_send(self, sender: str, record: dict[str, Any], payload: dict[str, Any],
                              template: dict[str, Any] | None) -> asyncio.Future[Any] | None:
        """`record_and_send` handed to a running child now, before the caller's next await (a reply with
        nothing ahead of it in its conversation: awaited in a task, its call would wait for that task's
        first step, an event-loop iteration behind every other turn's ready step). Its result is awaited
        later. None: no child runs, or the call cannot go as a frame; the caller sends as usual."""
        if self._transport is None:
            return None
        try:
            return self._sent(_SEND, (sender, record, payload, template))[1]
        except ValueError:  # over the frame limit: `record_and_send` raises it where the send is awaited
            return None

    def receipt(self, client: Any, business_id: str, message_id: str, reply_to: str, typing: bool) -> bool:
        """The read receipt (+ typing), sent by a running child; nothing comes back (a lost one costs blue
        ticks). False: no child runs, the caller sends it."""
        key = self.sender_key(client)
        if self._transport is None or key is None:
            return False
        self._write((0, _RECEIPT, (key, business_id, message_id, reply_to, typing)))
        return True

    async def call(self, method: str, *args: Any) -> Any:
        """Run an inbox method in the child; once more in a new child when the first died with it in hand
        (as `retry_transient` runs a call again after a dropped connection: the server rolled back what the
        dead child had not committed)."""
        try:
            return await self._call_once(method, args)
        except InboxHelperGone:
            logger.warning("the inbox helper process ended during %s; running it again in a new one", method)
            return await self._call_once(method, args)

    async def _call_once(self, method: str, args: tuple[Any, ...]) -> Any:
        if self._transport is None:
            await self.start()
        call_id, answer = self._sent(method, args)
        try:
            return await answer
        finally:
            self._waiting.pop(call_id, None)  # (cancelled: a late answer finds no one waiting)

    def _sent(self, method: str, args: tuple[Any, ...]) -> tuple[int, asyncio.Future[Any]]:
        """Write a call to the child; its id and the future its answer (or error) will settle. ValueError (over
        the frame limit) before anything is written or awaited."""
        call_id = self._next_id
        data = _frame((call_id, method, args))
        self._next_id += 1
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = answer
        try:
            self._write_frame(data)
        except BaseException:
            del self._waiting[call_id]
            raise
        return call_id, answer

    def _write(self, message: Any) -> None:
        self._write_frame(_frame(message))

    def _write_frame(self, data: bytes) -> None:
        if self._transport is None:
            raise InboxHelperGone("the inbox helper process is not running")
        self._transport.get_pipe_transport(0).write(data)  # type: ignore[union-attr]

    async def start(self) -> None:
        """Start the child unless it runs (the first call does it too)."""
        if self._transport is not None:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._spawn())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        finally:
            if starting.done():
                self._starting = None

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _protocol = await loop.subprocess_exec(
                lambda: _ParentSide(self), sys.executable, "-m", "connectors.inbox_helper", stderr=None,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, os.environ.get("PYTHONPATH"))))})
        except OSError as error:
            raise InboxHelperGone(f"could not start the inbox helper process: {error}") from error
        self._transport = transport
        if transport.get_returncode() is not None:  # died before its pipes were ours: nothing would answer
            self._gone(transport, "it exited at start")
            raise InboxHelperGone("the inbox helper process exited at start (its error is in the log above)")
        self._write((0, "__start__", (*self._start_with, dict(self._attributes))))
        for spec, key in self._senders.items():
            self._write((0, _SENDER, (key, spec)))
        logger.info("inbox statements run in helper process %s", transport.get_pid())

    def _answered(self, call_id: int, ok: bool, value: Any) -> None:
        answer = self._waiting.pop(call_id, None)
        if answer is not None and not answer.done():
            if ok:
                answer.set_result(value)
            else:
                answer.set_exception(value)

    def _gone(self, transport: asyncio.SubprocessTransport | None, why: str) -> None:
        """`transport`'s child ended: its calls fail (a late word from an earlier child changes nothing)."""
        if transport is None or transport is not self._transport:
            return
        self._transport = None
        if not transport.is_closing():
            transport.close()
        waiting = list(self._waiting.values())
        self._waiting.clear()
        if waiting:
            logger.error("the inbox helper process ended (%s) with %d call(s) unanswered", why, len(waiting))
        for answer in waiting:
            if not answer.done():
                answer.set_exception(InboxHelperGone(f"the inbox helper process ended: {why}"))

    async def close(self) -> None:
        """Close its input: it ends the calls in hand and exits (killed if it has not after 10 s)."""
        transport = self._transport
        if transport is None:
            return
        stdin = transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()
        for _ in range(int(_CLOSE_WAIT_SECONDS / 0.05)):
            if transport.get_returncode() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            transport.kill()
        self._gone(transport, "closed")


# --- the child -----------------------------------------------------------------------------------------


def _carried(error: BaseException) -> BaseException:
    """The error itself when it survives pickling, else its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return InboxHelperError(f"{type(error).__name__}: {error}")


class _ChildSide(asyncio.Protocol):
    def __init__(self, out: asyncio.WriteTransport, ended: asyncio.Future[None]) -> None:
        self.out = out
        self.ended = ended
        self.frames = _Frames()
        self.inbox: Any = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.specs: dict[str, tuple[Any, ...]] = {}
        self.clients: dict[str, Any] = {}

    def data_received(self, data: bytes) -> None:
        for call_id, method, args in self.frames.feed(data):
            if method == "__start__":
                try:
                    self._open(*args)
                except Exception:  # the database is away or the URL wrong: Rasa's side starts another later
                    logger.exception("could not open the inbox")
                    self.out.close()
                    self.connection_lost(None)
                    return
            elif method == _SET:
                setattr(self.inbox, *args)
            elif method == _SENDER:
                key, spec = args
                self.specs[key] = spec
            else:
                work = self._receipt(*args) if method == _RECEIPT else self._run(call_id, method, args)
                task = asyncio.ensure_future(work)
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    def _open(self, url: str, identity: Any, lease_seconds: float, attributes: dict[str, Any]) -> None:
        from connectors.inbox import ON_EVENTS, Inbox, create_inbox_engine

        self.inbox = Inbox(create_inbox_engine(url), identity, lease_seconds, calls=ON_EVENTS)
        for attribute, value in attributes.items():
            setattr(self.inbox, attribute, value)

    def _client(self, key: str) -> Any:
        """The client Rasa's side described under `key`, built on first use (on this loop)."""
        if key not in self.clients:
            from connectors.sending import RetryingSender

            module, name, arguments = self.specs[key]
            cls = getattr(importlib.import_module(module), name) if module.startswith("connectors.") else None
            if not (isinstance(cls, type) and issubclass(cls, RetryingSender)):
                raise TypeError(f"the inbox helper sends only with the channels' clients, not {module}.{name}")
            self.clients[key] = cls(*arguments)
        return self.clients[key]

    async def _receipt(self, key: str, business_id: str, message_id: str, reply_to: str, typing: bool) -> None:
        try:
            await self._client(key).mark_read_and_typing(business_id, message_id, reply_to, typing=typing)
        except Exception:  # best effort, as on Rasa's side
            logger.warning("could not send the read receipt of %s", message_id, exc_info=True)

    async def _answer(self, method: str, args: tuple[Any, ...]) -> Any:
        if method == _SEND:
            from connectors.delivery import record_and_send

            key, record, payload, template = args
            return await record_and_send(self.inbox.call, self.inbox, self._client(key), record, payload, template)
        if method.startswith("_") or not callable(getattr(type(self.inbox), method, None)):
            raise AttributeError(f"the inbox has no method {method!r} to call")
        return await self.inbox.call(getattr(self.inbox, method), *args)

    async def _run(self, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            data = _frame((call_id, True, await self._answer(method, args)))
        except Exception as error:
            data = _frame((call_id, False, _carried(error)))
        self.out.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    # The answers go out on the stdout this process was given; anything else printed goes to stderr.
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, answers)
    ended: asyncio.Future[None] = loop.create_future()
    side = _ChildSide(out, ended)  # type: ignore[arg-type]
    await loop.connect_read_pipe(lambda: side, os.fdopen(0, "rb", buffering=0))
    await ended  # stdin closed: Rasa stopped or died
    if side.tasks:
        await asyncio.wait(side.tasks, timeout=_CLOSE_WAIT_SECONDS)
    for client in side.clients.values():
        await client.close()
    if side.inbox is not None:
        await side.inbox.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="inbox helper %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve())
