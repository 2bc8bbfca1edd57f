"""Split a document into chunks along its structure, each within the model's window.

The text is first cut into pieces that never straddle a structural boundary: lines, and for prose
the sentences in them. Each piece carries the strength of the boundary before it (a heading or a
top-level definition, a blank line, a line break, a sentence) and the context it sits in (the
heading trail, the enclosing definition's first line, a CSV header). Pieces are then packed into
chunks: a chunk ends at a strong boundary once it has some substance, at a paragraph once it is
nearly full, and otherwise when the next piece would not fit; a chunk that ended on size
starts the next one with its last sentence or two (the overlap). Every chunk's text is an exact
character span of the document, so a hit can point into the file.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

from search.embeddings import MAX_TOKENS as MODEL_TOKENS
from search.embeddings import count_tokens, get_tokenizer
from search.extract import Document

# Word pieces, without the two special tokens the model adds.
LIMIT = MODEL_TOKENS - 6          # no chunk (context included) is longer than this
TARGET = 200                      # a chunk is closed when the next piece would take it past this
PIECE_LIMIT = 180                 # longer pieces are cut at sentences, then at words
CONTEXT_LIMIT = 48                # the context line is cut to this
OVERLAP = 40                      # at most this much of a chunk is repeated at the start of the next
MIN_SECTION = 40                  # below this a chunk absorbs the next section instead of ending
# Characters: a "word" the tokenizer cannot read (base64, minified code) is one [UNK] token however
# long it is, so pieces and chunks are bounded in characters as well.
PIECE_CHARS = 1200
CHUNK_CHARS = 2400

SENTENCE, LINE, BLOCK, HARD = 0, 1, 2, 3


@dataclass(frozen=True)
class Piece:
    start: int
    end: int
    level: int
    context: str = ""
    tokens: int = 0


@dataclass(frozen=True)
class ChunkSpec:
    ordinal: int
    start: int
    end: int
    text: str
    context: str
    tokens: int

    @property
    def embed_text(self) -> str:
        """What the model and the keyword index read: the context line, then the text."""
        return f"{self.context}\n{self.text}" if self.context else self.text

    @property
    def sha(self) -> str:
        return hashlib.sha256(self.embed_text.encode("utf-8")).hexdigest()[:32]


def chunk_document(doc: Document) -> list[ChunkSpec]:
    if not doc.text.strip():
        return []
    pieces = {
        "markdown": _markdown_pieces, "code": _code_pieces, "csv": _csv_pieces, "json": _json_pieces,
    }.get(doc.kind, _prose_pieces)(doc.text)
    pieces = _fit(doc.text, pieces, prose=doc.kind in {"markdown", "text", "pdf"})
    return _pack(doc.text, pieces)


# -- lines and their boundaries ---------------------------------------------------------------
def _lines(text: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, line) for every line, without its line break."""
    pos = 0
    for raw in text.splitlines(keepends=True):
        line = raw.rstrip("\r\n")
        yield pos, pos + len(line), line
        pos += len(raw)


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _line_pieces(text: str, level_of: dict[int, int] | None = None,
                 context_of: dict[int, str] | None = None) -> list[Piece]:
    """One piece per non-blank line; a blank line before it makes it a BLOCK boundary."""
    pieces: list[Piece] = []
    blank = True
    page_break = False
    for number, (start, end, line) in enumerate(_lines(text)):
        if not line.strip():
            blank = True
            page_break = page_break or "\f" in line
            continue
        s, e = _trimmed(text, start, end)
        level = (level_of or {}).get(number, LINE)
        if blank:
            level = max(level, BLOCK)
        if page_break:
            level = HARD
        pieces.append(Piece(s, e, level, (context_of or {}).get(number, "")))
        blank = page_break = False
    return pieces


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _markdown_pieces(text: str) -> list[Piece]:
    levels: dict[int, int] = {}
    contexts: dict[int, str] = {}
    trail: list[str] = []
    fence = ""
    previous = ""
    lines = list(_lines(text))
    for number, (_, _, line) in enumerate(lines):
        fence_match = _FENCE.match(line)
        if fence:
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                fence = ""
            contexts[number] = _trail(trail)
            previous = line
            continue
        if fence_match:
            fence = fence_match.group(1)
        heading = _ATX.match(line)
        setext = (_SETEXT.match(line) and previous.strip() and not _ATX.match(previous)
                  and number > 0 and levels.get(number - 1) != HARD)
        if heading:
            depth = len(heading.group(1))
            trail = trail[: depth - 1]
            contexts[number] = _trail(trail)
            trail.append(heading.group(2).strip())
            levels[number] = HARD
        elif setext:
            depth = 1 if line.strip().startswith("=") else 2
            trail = trail[: depth - 1]
            contexts[number - 1] = _trail(trail)
            trail.append(previous.strip())
            levels[number - 1] = HARD
            contexts[number] = _trail(trail)
        else:
            contexts[number] = _trail(trail)
        previous = line
    return _line_pieces(text, levels, contexts)


def _trail(trail: list[str]) -> str:
    return " > ".join(trail)


_DEFINITION = re.compile(
    r"^(?:async\s+def|def|class|function|func|fn|pub(?:\([^)]*\))?\s|impl|struct|enum|trait|interface|type|"
    r"module|export|public|private|protected|internal|static|abstract|final|sealed|package|const|let|var|"
    r"CREATE|create|object|data\s+class|fun|sub|procedure|template)\b"
)
_NESTED_DEFINITION = re.compile(r"^\s+(?:async\s+def|def|class|function|func|fn|public|private|protected)\b")
_ANNOTATION = re.compile(r"^\s*(?:@|#(?!include)|//|/\*|\*|--|;|\"\"\"|''')")


def _code_pieces(text: str) -> list[Piece]:
    levels: dict[int, int] = {}
    contexts: dict[int, str] = {}
    lines = list(_lines(text))
    signature = ""
    for number, (_, _, line) in enumerate(lines):
        if _DEFINITION.match(line):
            # Comments and decorators right above a definition belong to it.
            first = number
            while first > 0 and lines[first - 1][2].strip() and _ANNOTATION.match(lines[first - 1][2]):
                first -= 1
            for k in range(first, number):
                levels.pop(k, None)
                contexts[k] = ""
            levels[first] = HARD
            signature = line.strip()[:200]
            contexts[number] = ""
            continue
        if _NESTED_DEFINITION.match(line):
            levels[number] = BLOCK
        elif line.strip() and not line[:1].isspace() and not _ANNOTATION.match(line):
            signature = ""  # top-level code that is not a definition ends the enclosing one
        contexts[number] = signature
    return _line_pieces(text, levels, contexts)


def _csv_pieces(text: str) -> list[Piece]:
    lines = list(_lines(text))
    header = next((line.strip() for _, _, line in lines if line.strip()), "")
    contexts = {number: header for number in range(len(lines))}
    pieces = _line_pieces(text, None, contexts)
    if pieces:
        pieces[0] = replace(pieces[0], context="")
    return pieces


def _json_pieces(text: str) -> list[Piece]:
    levels: dict[int, int] = {}
    for number, (_, _, line) in enumerate(_lines(text)):
        indent = len(line) - len(line.lstrip(" \t"))
        stripped = line.strip()
        # Members of the top-level object or array, and each record of JSON Lines.
        if indent <= 4 and stripped[:1] in {'"', "{", "["}:
            levels[number] = BLOCK
    return _line_pieces(text, levels)


def _prose_pieces(text: str) -> list[Piece]:
    return _line_pieces(text, {})


# -- fitting pieces to the window -------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9À-Ý])")


def split_sentences(text: str) -> list[str]:
    """The sentences of a text, never across a line break (a heading, a list item, a row)."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            out.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    return out


def _sentences(text: str, piece: Piece) -> list[Piece]:
    out: list[Piece] = []
    start = piece.start
    body = text[piece.start:piece.end]
    for match in _SENTENCE_END.finditer(body):
        end = piece.start + match.start()
        s, e = _trimmed(text, start, end)
        if e > s:
            out.append(Piece(s, e, SENTENCE if out else piece.level, piece.context))
        start = piece.start + match.end()
    s, e = _trimmed(text, start, piece.end)
    if e > s:
        out.append(Piece(s, e, SENTENCE if out else piece.level, piece.context))
    return out or [piece]


def _windows(text: str, piece: Piece) -> list[Piece]:
    """Cut a piece with no usable sentence boundary into runs of whole words within PIECE_LIMIT."""
    body = text[piece.start:piece.end]
    encoding = get_tokenizer().encode(body, add_special_tokens=False)
    offsets = encoding.offsets
    out: list[Piece] = []
    first = 0
    while first < len(offsets):
        last = min(first + PIECE_LIMIT, len(offsets))
        if last < len(offsets):
            # Move the cut back to the start of a word, if there is one not too far back.
            for cut in range(last, max(first + PIECE_LIMIT // 2, first + 1), -1):
                begin = offsets[cut][0]
                if begin > 0 and body[begin - 1].isspace():
                    last = cut
                    break
        begin_char = offsets[first][0]
        end_char = offsets[last][0] if last < len(offsets) else len(body)
        s, e = _trimmed(text, piece.start + begin_char, piece.start + end_char)
        if e > s:
            out.append(Piece(s, e, SENTENCE if out else piece.level, piece.context, last - first))
        first = last
    return out


def _char_windows(text: str, piece: Piece) -> list[Piece]:
    """Cut a piece longer than PIECE_CHARS, at whitespace where there is some."""
    out: list[Piece] = []
    start = piece.start
    while start < piece.end:
        end = min(start + PIECE_CHARS, piece.end)
        if end < piece.end:
            space = text.rfind(" ", start + PIECE_CHARS // 2, end)
            end = space if space > start else end
        s, e = _trimmed(text, start, end)
        if e > s:
            out.append(Piece(s, e, SENTENCE if out else piece.level, piece.context))
        start = end
    return out


def _fit(text: str, pieces: list[Piece], *, prose: bool) -> list[Piece]:
    """Count every piece's tokens; cut prose into sentences and anything too long into windows."""
    if prose:
        pieces = [s for p in pieces for s in _sentences(text, p)]
    pieces = [w for p in pieces for w in (_char_windows(text, p) if p.end - p.start > PIECE_CHARS else [p])]
    counts = count_tokens([text[p.start:p.end] for p in pieces])
    fitted: list[Piece] = []
    for piece, count in zip(pieces, counts, strict=True):
        if count <= PIECE_LIMIT:
            fitted.append(replace(piece, tokens=count))
            continue
        parts = _sentences(text, piece) if not prose else [piece]
        part_counts = count_tokens([text[p.start:p.end] for p in parts])
        for part, part_count in zip(parts, part_counts, strict=True):
            if part_count <= PIECE_LIMIT:
                fitted.append(replace(part, tokens=part_count))
            else:
                fitted.extend(_windows(text, part))
    return fitted


# -- packing -------------------------------------------------------------------------------------
class _Contexts:
    """Token counts of context lines, cut to CONTEXT_LIMIT, computed once per distinct context."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, int]] = {}

    def get(self, context: str) -> tuple[str, int]:
        if not context:
            return "", 0
        if context not in self._cache:
            encoding = get_tokenizer().encode(context, add_special_tokens=False)
            if len(encoding.ids) > CONTEXT_LIMIT:
                cut = encoding.offsets[CONTEXT_LIMIT][0]
                short = context[:cut].rstrip() + "…"
                self._cache[context] = (short, CONTEXT_LIMIT + 1)
            else:
                # +1 for the line break between the context and the text.
                self._cache[context] = (context, len(encoding.ids) + 1)
        return self._cache[context]


def _pack(text: str, pieces: list[Piece]) -> list[ChunkSpec]:
    contexts = _Contexts()
    chunks: list[ChunkSpec] = []
    current: list[Piece] = []

    def size(group: list[Piece]) -> int:
        return sum(p.tokens for p in group) + (contexts.get(group[0].context)[1] if group else 0)

    def emit(group: list[Piece]) -> None:
        context, context_tokens = contexts.get(group[0].context)
        start, end = group[0].start, group[-1].end
        chunks.append(ChunkSpec(ordinal=len(chunks), start=start, end=end, text=text[start:end],
                                context=context, tokens=sum(p.tokens for p in group) + context_tokens))

    for piece in pieces:
        if current:
            used = size(current)
            if piece.level == HARD and used >= MIN_SECTION:
                emit(current)
                current = []
            elif (used + piece.tokens > TARGET or (piece.level >= BLOCK and used >= TARGET * 0.8)
                  or piece.end - current[0].start > CHUNK_CHARS):
                emit(current)
                current = _overlap(current)
                while current and (size(current) + piece.tokens > LIMIT
                                   or piece.end - current[0].start > CHUNK_CHARS):
                    current = current[1:]
        current.append(piece)
    if current:
        emit(current)
    return chunks


def _overlap(group: list[Piece]) -> list[Piece]:
    """The last sentences of a chunk, at most OVERLAP tokens, never the whole chunk."""
    tail: list[Piece] = []
    used = 0
    for piece in reversed(group[1:]):
        if used + piece.tokens > OVERLAP:
            break
        tail.insert(0, piece)
        used += piece.tokens
    return tail
