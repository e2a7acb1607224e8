from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.chunking import MAX_CHARS, chunk_document, sections, split_text
from retrieval.documents import MAX_FILE_BYTES, UnreadableDocument, find_files, read_document
from tests.app.retrieval.helpers import minimal_pdf

KNOWLEDGE = Path(__file__).resolve().parents[3] / "knowledge"


def test_markdown_document_keeps_title_source_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "return-policy.md"
    path.write_text("# Return policy\n\nIntro.\n\n## After 30 days\nWarranty applies.\n")
    doc = read_document(path)
    assert (doc.doc_id, doc.title, doc.source) == ("return-policy", "Return policy", str(path))
    assert read_document(path).content_hash == doc.content_hash
    path.write_text("# Return policy\n\nIntro changed.\n")
    assert read_document(path).content_hash != doc.content_hash


def test_html_headings_become_sections_and_scripts_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text("<html><head><style>p{}</style><script>alert('x')</script></head><body><nav>Menu</nav>"
                    "<h1>Invoices</h1><p>Download it from <b>Account</b>.</p><h2>Company invoices</h2>"
                    "<ul><li>Add your CIF</li><li>at checkout</li></ul></body></html>")
    doc = read_document(path)
    assert doc.title == "Invoices"
    assert "alert" not in doc.text and "Menu" not in doc.text and "p{}" not in doc.text
    assert [path for path, _ in sections(doc.text)] == [["Invoices"], ["Invoices", "Company invoices"]]
    assert "- Add your CIF" in doc.text


def test_plain_text_and_pdf(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("Opening hours\nWe open at nine.\n")
    (tmp_path / "leaflet.pdf").write_bytes(minimal_pdf(["Voltbay Care leaflet", "Repairs take 5 to 7 days."]))
    text = read_document(tmp_path / "notes.txt")
    pdf = read_document(tmp_path / "leaflet.pdf")
    assert text.title == "Opening hours"
    assert "Repairs take 5 to 7 days." in pdf.text and pdf.doc_id == "leaflet"


@pytest.mark.parametrize("name, content, reason", [
    ("empty.md", b"   \n\n", "no text"),
    ("broken.pdf", b"%PDF-1.4 this is not a pdf", "not a readable PDF"),
    ("image.png", b"\x89PNG", "unsupported type"),
])
def test_unreadable_files_get_a_clear_error(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableDocument, match=reason):
        read_document(path)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(UnreadableDocument, match="more than"):
        read_document(path)


def test_binary_garbage_and_nul_bytes_do_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "odd.md"
    path.write_bytes(b"# T\xff\xfeitle\x00\n\nbody \x00 text\r\nmore")
    doc = read_document(path)
    assert "\x00" not in doc.text and "\r" not in doc.text


def test_folders_are_walked_and_missing_paths_reported(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# B\nb")
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "skip.png").write_bytes(b"x")
    assert [p.name for p in find_files([tmp_path])] == ["a.txt", "b.md"]
    with pytest.raises(UnreadableDocument, match="no such file"):
        list(find_files([tmp_path / "nope"]))


def test_chunks_follow_headings_with_title_paths() -> None:
    doc = read_document(KNOWLEDGE / "warranty.md")
    chunks = chunk_document(doc)
    assert [c.title_path for c in chunks][:2] == ["Warranty › Two years on everything",
                                                   "Warranty › What the warranty does not cover"]
    assert all(c.source.endswith("warranty.md") and c.doc_id == "warranty" for c in chunks)
    assert [c.chunk_id for c in chunks] == [f"warranty#{n}" for n in range(len(chunks))]
    assert chunk_document(doc) == chunks  # deterministic


def test_long_sections_are_split_with_overlap_and_limit() -> None:
    sentences = [f"Sentence number {n} says something about deliveries." for n in range(80)]
    pieces = split_text(" ".join(sentences))
    assert len(pieces) > 2 and all(len(p) <= MAX_CHARS for p in pieces)
    first_words = pieces[1].split()[:3]
    assert " ".join(first_words) in pieces[0]  # the next piece starts with the end of the previous one
    endless = "x" * 5000
    assert all(len(p) <= MAX_CHARS for p in split_text(endless))


def test_tiny_sections_merge_into_the_next() -> None:
    from retrieval.documents import Document

    doc = Document("d", "T", "# T\n\n## A\nshort\n\n## B\n" + "Long enough body text here. " * 3, "d.md", "h")
    chunks = chunk_document(doc)
    assert len(chunks) == 1 and chunks[0].text.startswith("short")


def test_every_shipped_article_reads_and_chunks() -> None:
    files = list(find_files([KNOWLEDGE]))
    assert len(files) >= 25
    for path in files:
        chunks = chunk_document(read_document(path))
        assert chunks and all(0 < len(c.text) <= MAX_CHARS for c in chunks), path
