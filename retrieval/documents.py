"""Reading source files into plain documents: Markdown, HTML, plain text and PDF.

Everything becomes Markdown-ish text (headings as `#` lines) so one chunker serves all formats.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html",
            ".pdf": "pdf"}
MAX_FILE_BYTES = 20 * 1024 * 1024  # a help-centre article is never this big: refuse instead of choking
DOC_ID_RE = re.compile(r"[^A-Za-z0-9_.-]+")


class UnreadableDocument(ValueError):
    """A file that cannot be read as a document (wrong type, too big, broken, empty)."""


@dataclass(frozen=True)
class Document:
    doc_id: str  # the file name without extension
    title: str
    text: str  # Markdown-ish: headings as "#" lines
    source: str  # the path it was read from
    content_hash: str


def doc_id_for(path: Path) -> str:
    return DOC_ID_RE.sub("-", path.stem).strip("-") or "document"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def find_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The readable files among `paths`, folders walked in name order; unknown types are skipped."""
    for path in paths:
        if path.is_dir():
            yield from (p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            yield path
        else:
            raise UnreadableDocument(f"{path}: no such file or folder")


def read_document(path: Path) -> Document:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnreadableDocument(f"{path}: unsupported type {path.suffix or '(none)'}; use "
                                 + ", ".join(sorted(SUFFIXES)))
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UnreadableDocument(f"{path}: {size} bytes, more than {MAX_FILE_BYTES}")
    if kind == "pdf":
        text = pdf_to_text(path)
    else:
        raw = path.read_bytes().decode("utf-8", errors="replace")
        text = html_to_markdown(raw) if kind == "html" else raw
    text = normalise(text)
    if not text.strip():
        raise UnreadableDocument(f"{path}: no text in it")
    return Document(doc_id=doc_id_for(path), title=title_of(text, path), text=text, source=str(path),
                    content_hash=content_hash(text))


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def title_of(text: str, path: Path) -> str:
    for line in text.splitlines():
        match = re.match(r"#\s+(.+)", line.strip())
        if match:
            return match.group(1).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first[:80] if first and len(first) <= 80 else path.stem.replace("-", " ").replace("_", " ").capitalize()


def pdf_to_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as error:
        raise UnreadableDocument(f"{path}: not a readable PDF ({error})") from error
    return "\n\n".join(pages)


class _HtmlToMarkdown(HTMLParser):
    SKIP = frozenset({"script", "style", "nav", "footer", "header", "noscript", "template"})
    BLOCKS = frozenset({"p", "div", "section", "article", "br", "tr", "table", "ul", "ol", "blockquote", "pre"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(re.sub(r"\s+", " ", data))


def html_to_markdown(html: str) -> str:
    parser = _HtmlToMarkdown()
    parser.feed(html)
    parser.close()
    lines = [line.strip() for line in "".join(parser.parts).splitlines()]
    return "\n".join(lines)
