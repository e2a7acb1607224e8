"""Run the assistant's processes in the foreground with prefixed logs.

One Ctrl-C stops them all; a process that exits on its own is reported and
the others are stopped, so a crash is never silently ignored.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages next to it

from connectors.rasa_serving import serving_env  # noqa: E402 - needs the path above
from console.settings import kept_secret  # noqa: E402 - needs the path above

VAR = ROOT / "var"
TOKEN_FILE = VAR / "rasa_token"
STOP_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    ready_url: str | None = None


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments, blanks and `export ` allowed)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def rasa_token(env: dict[str, str], token_file: Path = TOKEN_FILE) -> str:
    """RASA_TOKEN from the environment, else one generated once and kept in var/."""
    return kept_secret(env, "RASA_TOKEN", token_file)


def configure_console(env: dict[str, str], log: Callable[[str], None]) -> None:
    """The secret the console and the channels share, and a first admin for a local run."""
    env["CHANNEL_AGENT_TOKEN"] = kept_secret(env, "CHANNEL_AGENT_TOKEN", VAR / "channel_agent_token")
    if not env.get("CONSOLE_ADMIN_EMAIL"):
        env["CONSOLE_ADMIN_EMAIL"] = "admin@voltbay.local"
        password_file = VAR / "console_admin_password"
        env["CONSOLE_ADMIN_PASSWORD"] = kept_secret(env, "CONSOLE_ADMIN_PASSWORD", password_file)
        log(f"console: log in as {env['CONSOLE_ADMIN_EMAIL']} with the password in "
            f"{password_file.relative_to(ROOT)} (set CONSOLE_ADMIN_EMAIL/PASSWORD to choose your own)")


def sandbox_mode(env: dict[str, str]) -> bool:
    """No WhatsApp access token: the channel talks to the local sandbox instead of Meta."""
    return not env.get("WHATSAPP_ACCESS_TOKEN")


def configure_sandbox(env: dict[str, str]) -> None:
    """Point the WhatsApp channel at the sandbox, with secrets made for this run only."""
    port = env.setdefault("SANDBOX_PORT", "5006")
    env["WHATSAPP_GRAPH_API_URL"] = f"http://127.0.0.1:{port}"
    env["WHATSAPP_ACCESS_TOKEN"] = secrets.token_urlsafe(24)
    env["WHATSAPP_APP_SECRET"] = secrets.token_urlsafe(24)
    env.setdefault("WHATSAPP_PHONE_NUMBER_ID", "SANDBOX-PNID")


def services(env: dict[str, str], with_sandbox: bool = False) -> list[Service]:
    rasa_port = env.get("RASA_PORT", "5005")
    action_port = env.get("ACTION_SERVER_PORT", "5055")
    receiver_port = env.setdefault("WHATSAPP_INGEST_PORT", "5007")
    receiver = f"http://127.0.0.1:{receiver_port}"
    extra = []
    if with_sandbox:
        port = env.get("SANDBOX_PORT", "5006")
        extra.append(Service(
            "sandbox",
            [str(ROOT / ".venv/app/bin/python"), "-m", "sandbox", "--port", port,
             "--channel-url", f"{receiver}/webhooks/whatsapp/webhook",
             "--evolution-channel-url", f"{receiver}/webhooks/evolution/webhook"],
            ready_url=f"http://127.0.0.1:{port}/api/conversations",
        ))
    return [
        # Both channels' webhooks, acknowledged outside Rasa's event loop (connectors/receiver.py).
        Service(
            "receiver",
            [str(ROOT / ".venv/rasa/bin/python"), "-m", "connectors.receiver", "--port", receiver_port],
            ready_url=f"{receiver}/health",
        ),
        Service(
            "rasa",
            [
                str(ROOT / ".venv/rasa/bin/rasa"), "run",
                "--enable-api", "--auth-token", env["RASA_TOKEN"],
                "--port", rasa_port,
                "--model", "models",
                "--endpoints", env.get("RASA_ENDPOINTS", "endpoints.yml"),
                "--credentials", env.get("RASA_CREDENTIALS", "credentials.yml"),
            ],
            ready_url=f"http://127.0.0.1:{rasa_port}/",
        ),
        Service(
            "actions",
            [str(ROOT / ".venv/app/bin/python"), "-m", "rasa_sdk", "--actions", "actions", "--port", action_port],
            ready_url=f"http://127.0.0.1:{action_port}/health",
        ),
        Service(
            "console",
            [str(ROOT / ".venv/app/bin/python"), "-m", "console"],
            ready_url=f"http://127.0.0.1:{env.get('CONSOLE_PORT', '8080')}/healthz",
        ),
        *extra,
    ]


def _pump(name: str, width: int, stream: Iterable[bytes], lock: threading.Lock) -> None:
    prefix = f"[{name:<{width}}] "
    for raw in stream:
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        with lock:
            sys.stdout.write(prefix + line + "\n")
            sys.stdout.flush()


def wait_until_ready(url: str, stop: threading.Event, timeout: float = 600.0) -> bool:
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # a local URL we built
                if response.status < 500:
                    return True
        except OSError:
            pass
        stop.wait(1.0)
    return False


class Supervisor:
    def __init__(self, specs: list[Service], env: dict[str, str], log: Callable[[str], None]) -> None:
        self.specs = specs
        self.env = env
        self.log = log
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def start(self) -> None:
        width = max(len(s.name) for s in self.specs)
        for spec in self.specs:
            proc = subprocess.Popen(
                spec.command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,  # we forward Ctrl-C ourselves, once, to the whole group
            )
            self.procs[spec.name] = proc
            assert proc.stdout is not None
            threading.Thread(target=_pump, args=(spec.name, width, proc.stdout, self.lock), daemon=True).start()
            if spec.ready_url:
                threading.Thread(target=self._announce_ready, args=(spec,), daemon=True).start()

    def _announce_ready(self, spec: Service) -> None:
        if spec.ready_url and wait_until_ready(spec.ready_url, self.stopping):
            parts = urllib.parse.urlsplit(spec.ready_url)
            self.log(f"{spec.name} is ready at {parts.scheme}://{parts.netloc}/")

    def watch(self) -> int:
        """Block until Ctrl-C (0) or until a process exits by itself (1)."""
        while not self.stopping.is_set():
            for name, proc in self.procs.items():
                code = proc.poll()
                if code is not None:
                    self.log(f"error: {name} exited with code {code}; stopping the others")
                    self.stop()
                    return 1
            self.stopping.wait(0.5)
        return 0

    def stop(self) -> None:
        self.stopping.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"{name} did not stop in {STOP_GRACE_SECONDS:.0f} s; killing it")
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def process_env(env_file: dict[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    """What the processes start with: .env, then the environment (it wins), then our serving defaults."""
    env = serving_env({**env_file, **environ})
    env.setdefault("RASA_TELEMETRY_ENABLED", "false")
    return env


def main() -> int:
    def log(message: str) -> None:
        print(f"[run] {message}", flush=True)

    env = process_env(read_env_file(ROOT / ".env"), os.environ)
    env["RASA_TOKEN"] = rasa_token(env)
    VAR.mkdir(exist_ok=True)
    if not os.environ.get("RASA_TOKEN") and not read_env_file(ROOT / ".env").get("RASA_TOKEN"):
        log(f"RASA_TOKEN not set: using the generated token in {TOKEN_FILE.relative_to(ROOT)}")

    configure_console(env, log)
    with_sandbox = sandbox_mode(env)
    if with_sandbox:
        configure_sandbox(env)
        log(f"WHATSAPP_ACCESS_TOKEN not set: WhatsApp sandbox at http://127.0.0.1:{env['SANDBOX_PORT']}/")
    supervisor = Supervisor(services(env, with_sandbox), env, log)

    def on_signal(signum: int, _frame: object) -> None:
        if not supervisor.stopping.is_set():
            log(f"got {signal.Signals(signum).name}, stopping everything")
            supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    supervisor.start()
    code = supervisor.watch()
    supervisor.stop()
    log("all processes stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
