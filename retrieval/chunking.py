"""Splitting a document into chunks by headings, with a size limit and overlap. Pure functions.

Each chunk keeps the path of headings above it ("Return policy › After 30 days") and its
source, so an answer can cite it and the embedder sees the context of a short section.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from retrieval.documents import Document, content_hash

MAX_CHARS = 1000  # ~200 words: one topic, and a passage that fits a WhatsApp answer
OVERLAP_CHARS = 150  # carried into the next piece when a long section is split
MIN_CHARS = 40  # a heading with a line under it is not worth a chunk of its own: merged into the next
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
PATH_SEPARATOR = " › "


@dataclass(frozen=True)
class Chunk:
    chunk_id: str  # "<doc_id>#<n>": stable while the document does not change
    doc_id: str
    ordinal: int
    title: str  # the document's title
    title_path: str  # headings above the chunk, joined with " › "
    text: str
    source: str
    doc_hash: str  # content hash of the whole document (its version)

    @property
    def embedding_text(self) -> str:
        return f"{self.title_path}\n{self.text}"


def sections(text: str) -> list[tuple[list[str], str]]:
    """(heading path, body) per heading; text before the first heading gets an empty path."""
    path: list[tuple[int, str]] = []
    out: list[tuple[list[str], str]] = []
    body: list[str] = []

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            out.append(([title for _, title in path], content))
        body.clear()

    for line in text.splitlines():
        match = HEADING.match(line.strip())
        if match:
            flush()
            level = len(match.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, match.group(2))]
        else:
            body.append(line)
    flush()
    return out


def split_text(text: str, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Pieces of at most `max_chars`, cut at paragraph, then sentence, then word boundaries."""
    if len(text) <= max_chars:
        return [text]
    units = _units(text, max_chars)
    pieces: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}\n{unit}".strip() if current else unit
        if len(candidate) <= max_chars:
            current = candidate
            continue
        pieces.append(current)
        tail = _tail(current, overlap)
        current = f"{tail} {unit}".strip() if tail and len(tail) + len(unit) + 1 <= max_chars else unit
    if current:
        pieces.append(current)
    return pieces


def _units(text: str, max_chars: int) -> list[str]:
    units: list[str] = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n|\n(?=- |\d+\. )", text)):
        if not paragraph:
            continue
        if len(paragraph) <= max_chars:
            units.append(paragraph)
            continue
        for sentence in SENTENCE_END.split(paragraph):
            while len(sentence) > max_chars:  # one endless "sentence": cut at a space
                cut = sentence.rfind(" ", 0, max_chars)
                cut = cut if cut > max_chars // 2 else max_chars
                units.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
            if sentence:
                units.append(sentence)
    return units


def _tail(text: str, overlap: int) -> str:
    if overlap <= 0:
        return ""
    tail = text[-overlap:]
    space = tail.find(" ")
    return tail[space + 1:] if 0 <= space < len(tail) - 1 else tail


def chunk_document(document: Document, max_chars: int = MAX_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    chunks: list[Chunk] = []
    carried = ""
    parts = sections(document.text)
    for index, (path, body) in enumerate(parts):
        body = f"{carried}\n{body}".strip() if carried else body
        carried = ""
        if len(body) < MIN_CHARS and index + 1 < len(parts):
            carried = body
            continue
        title_path = PATH_SEPARATOR.join(path) or document.title
        for piece in split_text(body, max_chars, overlap):
            chunks.append(Chunk(chunk_id=f"{document.doc_id}#{len(chunks)}", doc_id=document.doc_id,
                                ordinal=len(chunks), title=document.title, title_path=title_path, text=piece,
                                source=document.source, doc_hash=document.content_hash))
    return chunks


def chunk_fingerprint(chunk: Chunk) -> str:
    return content_hash(f"{chunk.title_path}\n{chunk.text}")
