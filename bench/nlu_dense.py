"""NLU + dialogue latency over REST, with and without the dense multilingual featurizer, in one run.

    make bench-nlu      (or: .venv/rasa/bin/python -m bench.nlu_dense --rounds 8 --messages 40)

Two Rasa servers run side by side on the same data: the trained model of models/ (config.yml, with
rasa_components.dense_e5.MultilingualSentenceFeaturizer) and a model trained here from the same
config without that component and the SVM that reads its features, DIET classifying the intents
as before (var/bench/no_dense/, retrained when data/, domain/ or config.yml change).
Each round sends the same messages, in the four languages, to both servers one after the
other (the order alternates between rounds), each message a new conversation turn on Rasa's REST
channel; latency is POST until the answer. The p50 ratio is taken per round and its median reported.

Target (issue 29): p50 ratio with/without the featurizer <= 1.3. Results: results/bench_nlu_dense.json.
Only messages whose turn ends in a response of the domain are sent: no action server is needed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RASA = ROOT / ".venv" / "rasa" / "bin" / "rasa"
BASELINE = ROOT / "var" / "bench" / "no_dense"
FEATURIZER = "rasa_components.dense_e5.MultilingualSentenceFeaturizer"
MESSAGES = [
    "hi there", "thanks a lot", "how long does delivery take", "tell me a joke", "what can you do",
    "hola buenas", "muchas gracias", "cuanto cuesta el envio", "cuentame un chiste", "que puedes hacer",
    "ola bom dia", "obrigado pela ajuda", "quanto tempo demora a entrega", "conta uma piada", "o que sabes fazer",
    "hallo zusammen", "danke dir", "wie lange dauert der versand", "erzähl einen witz", "was kannst du",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def latest_model() -> Path:
    models = sorted((ROOT / "models").glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not models:
        sys.exit("no trained model in models/: run `make train` first")
    return models[-1]


def baseline_config() -> str:
    """config.yml without the dense featurizer. The SVM that classifies intents on its features goes
    with it, and DIET classifies the intents again, as it did before the featurizer came."""
    import yaml

    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    pipeline = [c for c in config["pipeline"] if c["name"] not in (FEATURIZER, "SklearnIntentClassifier")]
    for component in pipeline:
        if component["name"] == "DIETClassifier":
            component.pop("intent_classification", None)
            component["epochs"] = 100
    return yaml.safe_dump({**config, "pipeline": pipeline}, sort_keys=False)


def inputs_hash(config: str) -> str:
    digest = hashlib.sha256(config.encode())
    for folder in ("data", "domain"):
        for path in sorted((ROOT / folder).rglob("*.yml")):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def baseline_model() -> Path:
    """The model without the dense featurizer, trained once per set of inputs."""
    config = baseline_config()
    BASELINE.mkdir(parents=True, exist_ok=True)
    model, stamp = BASELINE / "no_dense.tar.gz", BASELINE / "inputs.sha256"
    wanted = inputs_hash(config)
    if model.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return model
    (BASELINE / "config.yml").write_text(config, encoding="utf-8")
    print("training the baseline model without the dense featurizer (once per data change) …", flush=True)
    started = time.monotonic()
    subprocess.run([str(RASA), "train", "--config", str(BASELINE / "config.yml"), "--data", "data", "--domain",
                    "domain", "--out", str(BASELINE), "--fixed-model-name", "no_dense"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, env={**os.environ, "RASA_TELEMETRY_ENABLED": "false"})
    print(f"  trained in {time.monotonic() - started:.0f} s", flush=True)
    stamp.write_text(wanted)
    return model


def start_server(model: Path, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    credentials, endpoints = workdir / "credentials.yml", workdir / "endpoints.yml"
    credentials.write_text("rest:\n")
    endpoints.write_text("{}\n")
    log = (workdir / f"rasa_{port}.log").open("wb")
    return subprocess.Popen([str(RASA), "run", "--model", str(model), "--port", str(port), "--credentials",
                             str(credentials), "--endpoints", str(endpoints)], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "RASA_TELEMETRY_ENABLED": "false"})


async def wait_ready(session: aiohttp.ClientSession, port: int, deadline: float = 300.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        try:
            async with session.post(f"http://127.0.0.1:{port}/webhooks/rest/webhook",
                                    json={"sender": "warmup", "message": "hi"}) as reply:
                if reply.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(1.0)
    raise RuntimeError(f"the Rasa server on port {port} did not answer within {deadline:.0f} s")


async def one_turn(session: aiohttp.ClientSession, port: int, sender: str, text: str) -> float:
    started = time.perf_counter()
    async with session.post(f"http://127.0.0.1:{port}/webhooks/rest/webhook",
                            json={"sender": sender, "message": text}) as reply:
        body = await reply.json()
        if reply.status != 200 or not body:
            raise RuntimeError(f"port {port}: {reply.status} with no answer to {text!r}")
    return (time.perf_counter() - started) * 1000


async def measure(ports: dict[str, int], rounds: int, messages: int) -> dict[str, Any]:
    results: dict[str, Any] = {"rounds": []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for port in ports.values():
            await wait_ready(session, port)
        for n in range(rounds):
            order = list(ports) if n % 2 == 0 else list(reversed(ports))
            latencies: dict[str, list[float]] = {name: [] for name in ports}
            for i in range(messages):
                text = MESSAGES[i % len(MESSAGES)]
                for name in order:
                    latencies[name].append(await one_turn(session, ports[name], f"r{n}-{i}", text))
            p50 = {name: statistics.median(values) for name, values in latencies.items()}
            results["rounds"].append({"p50_ms": p50, "p95_ms": {k: percentile(v, 95) for k, v in latencies.items()},
                                      "ratio_p50": p50["dense"] / p50["no_dense"]})
            print(f"round {n + 1}: p50 dense {p50['dense']:.1f} ms, without {p50['no_dense']:.1f} ms, "
                  f"ratio {results['rounds'][-1]['ratio_p50']:.3f}", flush=True)
    results["median_ratio_p50"] = statistics.median(r["ratio_p50"] for r in results["rounds"])
    for name in ports:
        results[f"median_p50_ms_{name}"] = statistics.median(r["p50_ms"][name] for r in results["rounds"])
        results[f"median_p95_ms_{name}"] = statistics.median(r["p95_ms"][name] for r in results["rounds"])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--messages", type=int, default=40, help="per round and server")
    parser.add_argument("--target", type=float, default=1.3)
    args = parser.parse_args(argv)
    models = {"dense": latest_model(), "no_dense": baseline_model()}
    workdir = ROOT / "var" / "bench" / "servers"
    workdir.mkdir(parents=True, exist_ok=True)
    ports = {"dense": 5211, "no_dense": 5212}
    servers = [start_server(models[name], port, workdir) for name, port in ports.items()]
    try:
        results = asyncio.run(measure(ports, args.rounds, args.messages))
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
    results.update(models={k: v.name for k, v in models.items()}, target=args.target,
                   measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    out = ROOT / "results" / "bench_nlu_dense.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"median over {args.rounds} rounds: p50 with the dense featurizer {results['median_p50_ms_dense']:.1f} ms, "
          f"without {results['median_p50_ms_no_dense']:.1f} ms; p50 ratio {results['median_ratio_p50']:.3f} "
          f"(target <= {args.target}); written to {out.relative_to(ROOT)}")
    return 0 if results["median_ratio_p50"] <= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
