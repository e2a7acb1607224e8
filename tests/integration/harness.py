"""Starts the real processes for integration tests: sandbox (Graph stand-in), action server, Rasa + channels.

Stdlib only, so browser tests in the app env use it too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.rasa_serving import serving_env
from connectors.whatsapp.signature import sign
from sandbox.webhooks import customer_message

ROOT = Path(__file__).resolve().parents[2]
RASA_PY = ROOT / ".venv/rasa/bin/python"
APP_PY = ROOT / ".venv/app/bin/python"
APP_SECRET = "integration-app-secret"
RASA_TOKEN = "integration-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text.startswith(("{", "[")) else text
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_for(predicate: Any, timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def text_webhook(user: str, wamid: str, text: str, phone_number_id: str = "PNID-1",
                 button_id: str | None = None, name: str = "Test Customer") -> bytes:
    reply = {"type": "button_reply", "id": button_id, "title": text} if button_id else None
    payload = customer_message(phone_number_id=phone_number_id, display_number="15550001111", wa_id=user,
                               name=name, wamid=wamid, timestamp=int(time.time()),
                               text=None if reply else text, reply=reply)
    return json.dumps(payload, ensure_ascii=False).encode()


EVOLUTION_KEY, EVOLUTION_SECRET, EVOLUTION_INSTANCE = "evo-key", "evo-secret", "voltbay"
CHANNEL_AGENT_TOKEN = "integration-agent-token"
CONSOLE_ADMIN = ("admin@voltbay.example", "integration-admin-pw")


@dataclass
class Stack:
    workdir: Path
    graph_port: int = field(default_factory=free_port)
    actions_port: int = field(default_factory=free_port)
    rasa_port: int = field(default_factory=free_port)
    ingest_port: int = field(default_factory=free_port)
    through_rasa: bool = False  # webhooks to Rasa's own routes instead of the receiver (`rasa run` by hand)
    inbox_db_url: str = ""  # default: the tracker store's database
    tracker_db_url: str = ""  # postgresql://user@host:port/db for Rasa's tracker store; default a SQLite file
    with_evolution: bool = True  # also configure the Evolution channel (the bench measures the Cloud one alone)
    rasa_nice: int = 0  # run Rasa at a lower CPU priority than the receiver (deployment option)
    with_console: bool = False  # also run the agent console (console/)
    console_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)  # settings for this stack's processes
    replicas: int = 1  # Rasa servers sharing the tracker store and the inbox, each running the worker
    redis_lock_prefix: str = ""  # Rasa's lock store in the local Redis under this prefix (several replicas)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    rasa_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rasa_ports = [self.rasa_port] + [free_port() for _ in range(self.replicas - 1)]

    @property
    def graph_url(self) -> str:
        return f"http://127.0.0.1:{self.graph_port}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    @property
    def rasa_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    @property
    def webhook_url(self) -> str:
        """Where webhooks go: the receiver, as in `make run` (or Rasa's own route)."""
        return f"{self.rasa_url if self.through_rasa else self.ingest_url}/webhooks/whatsapp/webhook"

    @property
    def evolution_webhook_url(self) -> str:
        return f"{self.rasa_url if self.through_rasa else self.ingest_url}/webhooks/evolution/webhook"

    @property
    def inbox_url(self) -> str:
        return self.inbox_db_url or self.tracker_db_url or f"sqlite:///{self.workdir / 'channel.db'}"

    def _lock_store(self) -> str:
        if not self.redis_lock_prefix:
            return "lock_store:\n  type: connectors.lock_store.InMemoryLockStore\n"  # as endpoints.yml
        return (f'lock_store:\n  type: connectors.lock_store.RedisLockStore\n  url: "127.0.0.1"\n  port: 6379\n'
                f'  key_prefix: "{self.redis_lock_prefix}"\n')

    def _tracker_store(self) -> str:
        if not self.tracker_db_url:
            return f'tracker_store:\n  type: SQL\n  dialect: "sqlite"\n  db: "{self.workdir / "tracker.db"}"\n'
        url = urllib.parse.urlsplit(self.tracker_db_url)  # as endpoints.production.yml spells it
        return (f'tracker_store:\n  type: SQL\n  dialect: "postgresql"\n  url: "{url.hostname}"\n'
                f'  port: {url.port or 5432}\n  db: "{url.path.lstrip("/")}"\n  username: "{url.username or ""}"\n'
                f'  password: "{url.password or ""}"\n')

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def env(self) -> dict[str, str]:
        return serving_env({
            **os.environ,
            "RASA_TELEMETRY_ENABLED": "false",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": "integration-verify",
            "WHATSAPP_ACCESS_TOKEN": "test-token",
            "WHATSAPP_GRAPH_API_URL": self.graph_url,
            "WHATSAPP_PHONE_NUMBER_ID": "PNID-1",
            "WHATSAPP_INBOX_DB_URL": self.inbox_url,
            "SHOP_DB_URL": f"sqlite:///{self.workdir / 'shop.db'}",
            "KB_PATH": str(self.workdir / "knowledge.db"),  # empty: questions get the honest no-answer
            # Evolution API channel: the sandbox stands in for Evolution too.
            "EVOLUTION_API_URL": self.graph_url,
            "EVOLUTION_API_KEY": EVOLUTION_KEY if self.with_evolution else "",
            "EVOLUTION_INSTANCE": EVOLUTION_INSTANCE,
            "EVOLUTION_WEBHOOK_SECRET": EVOLUTION_SECRET,
            # The agent console and the channels' agent routes.
            "CHANNEL_AGENT_TOKEN": CHANNEL_AGENT_TOKEN,
            "RASA_TOKEN": RASA_TOKEN,
            "CONSOLE_PORT": str(self.console_port),
            "CONSOLE_DB_URL": f"sqlite:///{self.workdir / 'console.db'}",
            "CONSOLE_TRACKER_DB_URL": f"sqlite:///{self.workdir / 'tracker.db'}",
            "CONSOLE_RASA_URL": self.rasa_url,
            "CONSOLE_ADMIN_EMAIL": CONSOLE_ADMIN[0],
            "CONSOLE_ADMIN_PASSWORD": CONSOLE_ADMIN[1],
            "CONSOLE_SECRET_KEY": "integration-console-secret",
            "CONSOLE_SECURE_COOKIE": "false",
            "CONSOLE_POLL_INTERVAL": "0.2",
            **self.extra_env,
        })

    def start(self) -> None:
        (self.workdir / "endpoints.yml").write_text(
            f'action_endpoint:\n  url: "http://127.0.0.1:{self.actions_port}/webhook"\n' + self._tracker_store()
            + self._lock_store())
        (self.workdir / "credentials.yml").write_text("rest:\nconnectors.whatsapp.channel.WhatsAppInput:\n"
                                                      "connectors.evolution.channel.EvolutionInput:\n")
        env = self.env()
        # The sandbox is the Graph API stand-in (with failure injection) and sends status webhooks back.
        self._spawn("graph", [str(APP_PY), "-m", "sandbox", "--port", str(self.graph_port),
                              "--channel-url", self.webhook_url,
                              "--evolution-channel-url", self.evolution_webhook_url], env)
        if not self.through_rasa:
            self._spawn("receiver", [str(RASA_PY), "-m", "connectors.receiver", "--port", str(self.ingest_port)], env)
            wait_for(lambda: self._up(f"{self.ingest_url}/health"), 60, what="webhook receiver")
        self._spawn("actions", [str(APP_PY), "-m", "rasa_sdk", "--actions", "actions",
                                "--port", str(self.actions_port)], env)
        if self.with_console:
            self._spawn("console", [str(APP_PY), "-m", "console"], env)
        for replica in range(self.replicas):  # loading the model: the replicas side by side
            self._spawn_rasa(replica)
        for replica in range(self.replicas):
            self._wait_for_rasa(replica)
        wait_for(lambda: self._up(f"{self.graph_url}/_sandbox/requests"), 30, what="sandbox (Graph stand-in)")
        if self.with_console:
            wait_for(lambda: self._up(f"{self.console_url}/healthz"), 60, what="agent console")
        wait_for(lambda: self._up(f"http://127.0.0.1:{self.actions_port}/health"), 60, what="action server")

    @staticmethod
    def _rasa_name(replica: int) -> str:
        return "rasa" if replica == 0 else f"rasa{replica + 1}"

    def replica_url(self, replica: int) -> str:
        return f"http://127.0.0.1:{self.rasa_ports[replica]}"

    def rasa_pid(self, replica: int = 0) -> int:
        """The Rasa server's process id (`nice` execs Rasa, so it is Rasa's own with --rasa-nice too)."""
        return self.procs[self._rasa_name(replica)].pid

    def _spawn_rasa(self, replica: int) -> None:
        nice = ["nice", "-n", str(self.rasa_nice)] if self.rasa_nice else []
        self._spawn(self._rasa_name(replica),
                    [*nice, str(ROOT / ".venv/rasa/bin/rasa"), "run", "--model", "models",
                     "--endpoints", str(self.workdir / "endpoints.yml"),
                     "--credentials", str(self.workdir / "credentials.yml"),
                     "--port", str(self.rasa_ports[replica]), "--enable-api", "--auth-token", RASA_TOKEN],
                    self.env())

    def _wait_for_rasa(self, replica: int) -> None:
        wait_for(lambda: self._up(f"{self.replica_url(replica)}/status?token={RASA_TOKEN}"), 240, interval=1.0,
                 what=f"Rasa server {replica + 1} with its model")

    def start_rasa(self, replica: int = 0) -> None:
        self._spawn_rasa(replica)
        self._wait_for_rasa(replica)

    def kill_rasa(self, replica: int = 0) -> None:
        proc = self.procs[self._rasa_name(replica)]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    @staticmethod
    def _up(url: str) -> bool:
        try:
            status, _ = http("GET", url, timeout=2)
            return status == 200
        except OSError:
            return False

    @contextmanager
    def running(self) -> Iterator[Stack]:
        """Started for the block, stopped after it; the processes' log tails printed (shown on failure)."""
        try:
            self.start()
            yield self
        finally:
            self.stop()
            for log in sorted(self.workdir.glob("*.log")):
                print(f"--- {log.name} (tail) ---\n{log.read_bytes()[-3000:].decode(errors='replace')}")

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    # --- driving it ---------------------------------------------------------
    def post_webhook(self, body: bytes, secret: str = APP_SECRET) -> int:
        status, _ = http("POST", self.webhook_url, raw=body,
                         headers={"X-Hub-Signature-256": sign(body, secret)})
        return status

    def sent(self) -> list[dict[str, Any]]:
        _, received = http("GET", f"{self.graph_url}/_sandbox/requests")
        return [r for r in received if r["payload"].get("status") != "read"]

    def sent_to(self, user: str, accepted_only: bool = True) -> list[dict[str, Any]]:
        return [r["payload"] for r in self.sent()
                if r["payload"].get("to") == user and (r["accepted"] or not accepted_only)]

    def post_evolution(self, body: dict[str, Any], secret: str = EVOLUTION_SECRET) -> int:
        status, _ = http("POST", self.evolution_webhook_url, body=body, headers={"X-Evolution-Secret": secret})
        return status

    def evolution_sent_to(self, jid: str, accepted_only: bool = True) -> list[dict[str, Any]]:
        _, received = http("GET", f"{self.graph_url}/_sandbox/requests")
        return [r["payload"] for r in received if r.get("api") == "evolution"
                and r["endpoint"] in ("sendText", "sendMedia") and r["payload"].get("number") == jid
                and (r["accepted"] or not accepted_only)]

    def configure_graph(self, **config: Any) -> None:
        http("POST", f"{self.graph_url}/_sandbox/config", body=config)

    def tracker(self, conversation_id: str) -> dict[str, Any]:
        _, tracker = http("GET", f"{self.rasa_url}/conversations/{conversation_id}/tracker?token={RASA_TOKEN}")
        return tracker
