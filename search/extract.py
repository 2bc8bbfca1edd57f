"""From a version's bytes to the text the index sees, and what kind of structure it has."""
from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass

from workspace.services.files import is_text

# Extracted text beyond this is not indexed (the rest of a huge file is noted in the state).
MAX_TEXT_CHARS = 2_000_000

MARKDOWN = frozenset({".md", ".markdown", ".mdx", ".mkd"})
CODE = frozenset({
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".java", ".kt", ".kts", ".scala", ".go",
    ".rs", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cs", ".swift", ".rb", ".php", ".lua", ".sh",
    ".bash", ".zsh", ".sql", ".r", ".pl", ".pm", ".ex", ".exs", ".erl", ".hs", ".ml", ".clj", ".dart", ".vue",
    ".svelte", ".m", ".mm", ".groovy", ".tf", ".proto",
})
JSON = frozenset({".json", ".jsonl", ".ndjson", ".geojson"})
CSV = frozenset({".csv", ".tsv"})


class NotIndexable(Exception):
    """The content has no text the index can use (binary, encrypted or unreadable)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Document:
    kind: str  # "markdown" | "code" | "json" | "csv" | "pdf" | "text"
    text: str
    truncated: bool = False


def kind_for(path: str) -> str:
    ext = posixpath.splitext(path.lower())[1]
    if ext in MARKDOWN:
        return "markdown"
    if ext in CODE:
        return "code"
    if ext in JSON:
        return "json"
    if ext in CSV:
        return "csv"
    if ext == ".pdf":
        return "pdf"
    return "text"


def extract(path: str, data: bytes) -> Document:
    kind = kind_for(path)
    if kind == "pdf" or data.startswith(b"%PDF-"):
        return _limit("pdf", pdf_text(data))
    if not is_text(data):
        raise NotIndexable("binary content")
    text = data.decode("utf-8")
    if text.startswith("\ufeff"):
        # Keep offsets honest: the BOM is a character of the file, replaced by a space.
        text = " " + text[1:]
    return _limit(kind, text)


def _limit(kind: str, text: str) -> Document:
    if len(text) > MAX_TEXT_CHARS:
        return Document(kind=kind, text=text[:MAX_TEXT_CHARS], truncated=True)
    return Document(kind=kind, text=text)


def pdf_text(data: bytes) -> str:
    """The text layer of a PDF, pages separated by a form feed (a hard chunk boundary)."""
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise NotIndexable("encrypted PDF")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except NotIndexable:
        raise
    except Exception as exc:  # a malformed upload fails the same way on every retry: record it, do not retry
        raise NotIndexable(f"unreadable PDF: {exc}") from exc
    text = "\n\f\n".join(page for page in pages if page)
    if not text.strip():
        raise NotIndexable("PDF without a text layer")
    return text
