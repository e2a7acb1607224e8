"""`kb`: the knowledge-base command line (app env).

    kb ingest knowledge/            add or update documents (Markdown, HTML, text, PDF; folders walked)
    kb search "question" [-k 5] [--json]
    kb list
    kb delete DOC_ID
    kb eval eval/questions.yml [--min-recall5 0.9 --min-refusal 0.8]

Store and embedder come from the environment: KB_BACKEND, KB_PATH, WEAVIATE_URL,
WEAVIATE_API_KEY, KB_EMBEDDER, OPENAI_API_KEY (see .env.example).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from retrieval.documents import UnreadableDocument, find_files
from retrieval.embedders import embedder_from_env
from retrieval.ingest import ingest_paths, search
from retrieval.settings import KBSettings, open_store
from retrieval.store import EmbedderMismatch

MAX_K = 50


def cmd_ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    settings = KBSettings.from_env()
    store = open_store(settings)
    try:
        files = [Path(p) for p in args.paths]
        total = len(list(find_files(files)))
        with tqdm(desc="ingest", unit="file", total=total, disable=args.quiet) as bar:
            def tick(path: Path) -> None:
                bar.set_postfix_str(path.name[:40])
                bar.update(1)

            report = ingest_paths(store, embedder_from_env(), files, progress=tick)
    finally:
        store.close()
    print(f"added {len(report.added)}, updated {len(report.updated)}, unchanged {len(report.unchanged)}, "
          f"failed {len(report.failed)}; {report.chunks} chunks written")
    for failure in report.failed:
        print(f"  skipped {failure}", file=sys.stderr)
    return 1 if report.failed else 0


def cmd_search(args: argparse.Namespace) -> int:
    if not 1 <= args.k <= MAX_K:
        print(f"error: -k must be between 1 and {MAX_K}", file=sys.stderr)
        return 2
    settings = KBSettings.from_env()
    store = open_store(settings)
    try:
        hits = search(store, embedder_from_env(), args.question, k=args.k, alpha=settings.alpha)
    finally:
        store.close()
    if args.json:
        print(json.dumps([hit.as_json() for hit in hits], ensure_ascii=False, indent=2))
        return 0
    if not hits:
        print("no results")
    for rank, hit in enumerate(hits, 1):
        snippet = " ".join(hit.text.split())[:160]
        print(f"{rank}. [{hit.score:.3f} cos {hit.vector_score:.3f}] {hit.doc_id} — {hit.title_path}\n   {snippet}")
    return 0


def cmd_list(_: argparse.Namespace) -> int:
    store = open_store(KBSettings.from_env())
    try:
        documents = store.documents()
        embedder = store.embedder_name()
    finally:
        store.close()
    print(f"{len(documents)} documents, {sum(d.chunks for d in documents)} chunks; embedder: {embedder or '-'}")
    for doc in documents:
        updated = dt.datetime.fromtimestamp(doc.updated_at).strftime("%Y-%m-%d %H:%M")
        print(f"  {doc.doc_id:<32} v{doc.version:<3} {doc.chunks:>3} chunks  {updated}  {doc.title}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    store = open_store(KBSettings.from_env())
    try:
        gone = store.delete_document(args.doc_id)
    finally:
        store.close()
    if not gone:
        print(f"error: no document {args.doc_id!r} (see `kb list`)", file=sys.stderr)
        return 1
    print(f"deleted {args.doc_id}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from retrieval.evaluation import evaluate, load_questions, plot, report_lines

    settings = KBSettings.from_env()
    store = open_store(settings)
    try:
        questions = load_questions(Path(args.file))
        result = evaluate(store, embedder_from_env(), questions, alpha=settings.alpha,
                          min_similarity=settings.min_similarity, min_relevance=settings.min_relevance)
    finally:
        store.close()
    for line in report_lines(result):
        print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result.as_json(), indent=2, ensure_ascii=False))
    if args.plot:
        plot(result, Path(args.plot))
        print(f"plot written to {args.plot}")
    failed = []
    if args.min_recall5 is not None and result.recall_at_5 < args.min_recall5:
        failed.append(f"recall@5 {result.recall_at_5:.3f} < {args.min_recall5}")
    if args.min_refusal is not None and result.refusal_rate < args.min_refusal:
        failed.append(f"refusal {result.refusal_rate:.3f} < {args.min_refusal}")
    for failure in failed:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failed else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from retrieval.calibration import best_cosines, calibrate
    from retrieval.evaluation import load_questions

    settings = KBSettings.from_env()
    store = open_store(settings)
    try:
        if not store.documents():
            raise ValueError("the knowledge base is empty: run `kb ingest` first")
        scored = best_cosines(store, embedder_from_env(), load_questions(Path(args.file)), settings.alpha)
    finally:
        store.close()
    found = calibrate(scored, args.max_false_refusal)
    if args.threshold_only:
        print(found.threshold)
        return 0
    print(f"KB_MIN_SIMILARITY={found.threshold}: refuses {found.refusal_rate:.3f} of {found.unanswerable} "
          f"unanswerable and {found.false_refusal_rate:.3f} of {found.answerable} answerable questions")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest", help="add or update documents")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    ingest.set_defaults(run=cmd_ingest)
    find = sub.add_parser("search", help="hybrid search")
    find.add_argument("question")
    find.add_argument("-k", type=int, default=5)
    find.add_argument("--json", action="store_true")
    find.set_defaults(run=cmd_search)
    sub.add_parser("list", help="documents with version and update time").set_defaults(run=cmd_list)
    delete = sub.add_parser("delete", help="remove a document and its chunks")
    delete.add_argument("doc_id")
    delete.set_defaults(run=cmd_delete)
    evaluation = sub.add_parser("eval", help="recall@1/@5, MRR and refusal on a labelled set")
    evaluation.add_argument("file")
    evaluation.add_argument("--min-recall5", type=float)
    evaluation.add_argument("--min-refusal", type=float)
    evaluation.add_argument("--out", help="write the figures as JSON")
    evaluation.add_argument("--plot", help="write a PNG plot")
    evaluation.set_defaults(run=cmd_eval)
    calibration = sub.add_parser("calibrate", help="the gate's threshold from a labelled set")
    calibration.add_argument("file")
    calibration.add_argument("--max-false-refusal", type=float, default=0.10)
    calibration.add_argument("--threshold-only", action="store_true", help="print the threshold alone")
    calibration.set_defaults(run=cmd_calibrate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (EmbedderMismatch, UnreadableDocument, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
