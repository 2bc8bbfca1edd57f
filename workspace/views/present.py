"""Presentation for the pages: safe rendering of user content, and the words and links around data.

Everything that reaches a template as markup is built here, from escaped or sanitised parts:
Markdown goes through `markdown` then `nh3`; code through pygments (which escapes); diffs and
cited passages through `escape`. Templates only ever mark these as safe.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from django.urls import reverse
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from workspace.models import Event, Lock

HIGHLIGHT_LIMIT = 256 * 1024
PREVIEW_LIMIT = 16 * 1024
MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdx", ".mkd"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
_URL_SAFE = "/~:@!$&'()*+,;="
_ALLOWED_SCHEMES = {"http", "https", "mailto"}


# -- urls --------------------------------------------------------------------------------------------
def quote_path(path: str) -> str:
    """A workspace path as URL path segments (a '?' or '#' in a file name stays part of it)."""
    return quote(path, safe=_URL_SAFE)


class Urls:
    """Page URLs of one workspace, built without a `reverse()` per row (a tree has 1,000 rows)."""

    def __init__(self, ws_id: str) -> None:
        self.ws_id = ws_id
        self._file = reverse("ws-file", kwargs={"ws": ws_id, "path": "x"})[:-1]
        self._history = reverse("ws-history", kwargs={"ws": ws_id, "path": "x"})[:-1]
        self._diff = reverse("ws-diff", kwargs={"ws": ws_id, "path": "x"})[:-1]
        self._raw = reverse("ws-raw", kwargs={"ws": ws_id, "path": "x"})[:-1]
        self._task = reverse("ws-task", kwargs={"ws": ws_id, "task_id": "x"})[:-2]
        self.tasks = reverse("ws-tasks", kwargs={"ws": ws_id})
        self.locks = reverse("ws-locks", kwargs={"ws": ws_id})
        self.approvals = reverse("ws-approvals", kwargs={"ws": ws_id})
        self.worklog = reverse("ws-worklog", kwargs={"ws": ws_id})
        self.members = reverse("ws-members", kwargs={"ws": ws_id})
        self.home = reverse("workspace", kwargs={"ws": ws_id})
        self.pipelines = reverse("ws-pipelines", kwargs={"ws": ws_id})

    def file(self, path: str, version: int | None = None, **params: Any) -> str:
        query = {**({"version": version} if version is not None else {}), **params}
        return self._file + quote_path(path) + (f"?{urlencode(query)}" if query else "")

    def history(self, path: str) -> str:
        return self._history + quote_path(path)

    def diff(self, path: str, start: int, end: int) -> str:
        return self._diff + quote_path(path) + "?" + urlencode({"from": start, "to": end})

    def raw(self, path: str, version: int | None = None, *, inline: bool = False) -> str:
        query = {**({"version": version} if version is not None else {}), **({"inline": 1} if inline else {})}
        return self._raw + quote_path(path) + (f"?{urlencode(query)}" if query else "")

    def pipeline(self, run_id: str) -> str:
        return f"{self.pipelines}{quote(run_id, safe='')}/"

    def task(self, task_id: str) -> str:
        return f"{self._task}{quote(task_id, safe='')}/"


# -- time ---------------------------------------------------------------------------------------------
def iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def stamp(value: datetime | None) -> str:
    """A UTC time as people read it ("2026-03-01 14:05:09"); the template filter costs 20x more."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def clock(value: datetime | None) -> str:
    """A time of day to the millisecond, for step timings ("14:05:09.482")."""
    return value.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3] if value else ""


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    return f"{hours // 24} days"


def time_left(until: datetime | None, now: datetime) -> str:
    """The words the countdown script keeps up to date ("42 s left"), rendered once on the server."""
    if until is None:
        return ""
    seconds = (until - now).total_seconds()
    return "expired" if seconds <= 0 else f"{duration(seconds)} left"


# -- trees ---------------------------------------------------------------------------------------------
def _lock_badge(lock: Lock, now: datetime, *, via: str = "") -> str:
    via_html = f" (via <code>{escape(via)}</code>)" if via else ""
    return (f' <span class="lock-badge" data-lock-path="{escape(lock.path)}">Locked by '
            f"<strong>{escape(lock.holder.username)}</strong>{via_html} · "
            f'<time datetime="{iso(lock.expires_at)}" data-countdown>{time_left(lock.expires_at, now)}</time></span>')


def render_tree(entries: list[Any], locks_by_path: dict[str, Lock], urls: Urls, now: datetime,
                base: str = "") -> SafeString:
    """The sorted files as nested lists (a <details> per directory), each with the lock covering it.

    Built in Python with every piece of user text escaped: a template loop over 1,000 files costs
    most of a second, this a few milliseconds.
    """
    from django.template.defaultfilters import filesizeformat

    from workspace.selectors import lock_covering

    out: list[str] = ['<ul class="tree">']
    stack: list[str] = []
    for entry in entries:
        parts = entry.path[len(base):].split("/")
        dirs = parts[:-1]
        common = 0
        while common < len(stack) and common < len(dirs) and stack[common] == dirs[common]:
            common += 1
        while len(stack) > common:
            stack.pop()
            out.append("</ul></details></li>")
        for name in dirs[common:]:
            stack.append(name)
            path = base + "/".join(stack) + "/"
            lock = locks_by_path.get(path)
            badge = _lock_badge(lock, now).replace("Locked by", "Locked (whole directory) by", 1) if lock else ""
            out.append(f'<li class="dir"><details open data-key="{escape(path)}"><summary>'
                       f'<span class="dir-name">{escape(name)}/</span>{badge}</summary><ul>')
        lock = lock_covering(entry.path, locks_by_path)
        badge = _lock_badge(lock, now, via=lock.path if lock.path != entry.path else "") if lock else ""
        out.append(f'<li class="file"><a href="{escape(urls.file(entry.path))}">{escape(parts[-1])}</a> '
                   f'<span class="meta">v{entry.version} · {filesizeformat(entry.size)} · {escape(entry.author)}'
                   f"</span>{badge}</li>")
    out.extend("</ul></details></li>" for _ in stack)
    out.append("</ul>")
    return mark_safe("".join(out))  # noqa: S308 - every piece of user text above goes through escape()


# -- content -----------------------------------------------------------------------------------------
def extension(path: str) -> str:
    return posixpath.splitext(path.lower())[1]


def is_markdown(path: str) -> bool:
    return extension(path) in MARKDOWN_EXTENSIONS


def is_image(path: str) -> bool:
    return extension(path) in IMAGE_EXTENSIONS


def as_text(data: bytes) -> str | None:
    from workspace.services.files import is_text

    return data.decode("utf-8") if is_text(data) else None


def render_markdown(text: str) -> SafeString:
    """Markdown to HTML, then sanitised: no script, no event handlers, no `javascript:` links, no
    ids or classes (which could imitate or clobber the page's own)."""
    import markdown
    import nh3

    html = markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"], output_format="html")
    clean = nh3.clean(html, url_schemes=_ALLOWED_SCHEMES, link_rel="noopener noreferrer nofollow",
                      strip_comments=True)
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above


def highlight(path: str, text: str) -> SafeString:
    """Code with pygments' token classes (styled by app.css); pygments escapes the text."""
    from pygments import highlight as pyg_highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_for_filename
    from pygments.util import ClassNotFound

    try:
        lexer = get_lexer_for_filename(posixpath.basename(path), stripnl=False, ensurenl=False)
    except ClassNotFound:
        lexer = TextLexer(stripnl=False, ensurenl=False)
    formatter = HtmlFormatter(cssclass="hl", wrapcode=True)
    return mark_safe(pyg_highlight(text, lexer, formatter))  # noqa: S308 - pygments escapes its input


def cited(text: str, start: int, end: int) -> SafeString:
    """The text with the cited passage (character offsets, as the index reports them) marked."""
    start = max(0, min(start, len(text)))
    end = max(start, min(end, len(text)))
    return format_html('<pre class="plain"><code>{}<mark id="cited" tabindex="-1">{}</mark>{}</code></pre>',
                       text[:start], text[start:end], text[end:])


def text_head(data: bytes, limit: int) -> str | None:
    """The first `limit` bytes as text (a character cut in half at the end is dropped), or None
    when the content is binary."""
    head = data[:limit]
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(data) > limit and exc.start >= len(head) - 3:
            return head[:exc.start].decode("utf-8", errors="strict") if exc.start else ""
        return None


def preview(path: str, data: bytes, limit: int = PREVIEW_LIMIT) -> SafeString | None:
    """A short rendering of a file version (for approvals); None for binary content."""
    text = text_head(data, limit)
    if text is None:
        return None
    return render_markdown(text) if is_markdown(path) else highlight(path, text)


@dataclass
class DiffLine:
    kind: str  # "add", "del", "ctx", "hunk", "head", "note"
    text: str


def diff_lines(diff: str) -> list[DiffLine]:
    lines = []
    for line in diff.splitlines():
        if line.startswith(("+++", "---")):
            kind = "head"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        elif line.startswith("\\"):
            kind = "note"
        else:
            kind = "ctx"
        lines.append(DiffLine(kind=kind, text=line))
    return lines


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


# -- events ------------------------------------------------------------------------------------------
def feed_row(event: Event, urls: Urls) -> dict[str, Any]:
    """What the feed shows of an event, as plain strings (a feed page renders 100 of these)."""
    return {
        "seq": event.seq, "iso": iso(event.at), "when": stamp(event.at), "type": event.type,
        "type_class": event.type.replace(".", "-").replace("_", "-"),
        "actor": event.actor.username if event.actor_id else "system",
        "for": event.on_behalf_of.username if event.on_behalf_of_id else "",
        "summary": event_summary(event) or event.target or event.type, "link": event_link(event, urls),
    }


def _path_of(event: Event) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    value = data.get("path") or data.get("to") or event.target
    return value if isinstance(value, str) else ""


def event_link(event: Event, urls: Urls) -> str:
    """The page about what the event concerns ("" when there is none)."""
    kind = event.type
    data = event.data if isinstance(event.data, dict) else {}
    if kind.startswith("file."):
        path = _path_of(event)
        if not path:
            return ""
        if kind == "file.deleted":
            return urls.history(path)
        version = data.get("version")
        return urls.file(path, version if isinstance(version, int) and kind != "file.index_failed" else None)
    if kind.startswith("lock."):
        return urls.locks
    if kind.startswith("task."):
        task = data.get("task") if isinstance(data.get("task"), str) else event.target
        return urls.task(task) if task else urls.tasks
    if kind.startswith("approval."):
        return f"{urls.approvals}#approval-{event.target}" if event.target else urls.approvals
    if kind.startswith("worklog."):
        return f"{urls.worklog}#entry-{data.get('seq', event.target)}"
    if kind.startswith(("member.", "rule.", "transfer.", "layout.")):
        return urls.members
    if kind.startswith("workspace."):
        return urls.home
    if kind.startswith("pipeline."):
        run = data.get("pipeline") if isinstance(data.get("pipeline"), str) else event.target
        return urls.pipeline(run) if run else urls.pipelines
    return ""


_DECIDED = {"approve": "approved", "reject": "rejected"}


def event_summary(event: Event) -> str:
    """One line about an event, in words (the type and target are shown beside it)."""
    data = event.data if isinstance(event.data, dict) else {}
    kind = event.type

    def get(key: str, default: Any = "") -> Any:
        return data.get(key, default)

    if kind == "file.written":
        return f"{'created' if get('created') else 'wrote'} {get('path')} v{get('version')} ({get('size')} bytes)"
    if kind == "file.deleted":
        return f"deleted {get('path')} (v{get('version')})"
    if kind == "file.moved":
        return f"moved {get('from')} to {get('to')} (v{get('version')})"
    if kind == "file.indexed":
        return f"indexed {get('path')} v{get('version')}: {get('status')}, {get('chunks')} chunks"
    if kind == "lock.acquired":
        reason = f": {get('reason')}" if get("reason") else ""
        return f"{get('holder')} locked {get('path')} for {get('ttl_seconds')} s{reason}"
    if kind in ("lock.released", "lock.expired", "lock.force_released", "lock.renewed"):
        verb = {"lock.released": "released", "lock.expired": "expired", "lock.renewed": "renewed",
                "lock.force_released": "force-released"}[kind]
        by = f" by {get('forced_by')}" if get("forced_by") else ""
        return f"lock on {get('path')} held by {get('holder')} {verb}{by}"
    if kind.startswith("task."):
        bits = [kind.split(".", 1)[1]]
        if get("title"):
            bits.append(str(get("title")))
        if get("old") and get("new"):
            bits.append(f"{get('old')} → {get('new')}")
        if get("reason"):
            bits.append(f"reason: {get('reason')}")
        return " · ".join(bits)
    if kind == "approval.requested":
        return f"approval requested: {get('title')}"
    if kind == "approval.decided":
        comment = f": {get('comment')}" if get("comment") else ""
        return f"{_DECIDED.get(get('decision'), get('decision'))}{comment}"
    if kind == "worklog.appended":
        return f"worklog entry #{get('seq')}"
    if kind == "member.set":
        return f"{event.target}: {get('old') or 'not a member'} → {get('new')}"
    if kind == "member.removed":
        return f"{event.target} removed (was {get('old')})"
    if kind == "rule.set":
        return f"only {', '.join(get('new') or []) or 'nobody'} may write {event.target}"
    if kind == "workspace.created":
        return f"workspace {get('name')} created"
    if kind == "workspace.transferred":
        return f"ownership moved from {get('from')} to {get('to')}"
    if kind == "transfer.offered":
        return f"ownership offered to {get('to')}"
    if kind == "pipeline.created":
        return f"pipeline {get('name')} started: {get('steps')} steps"
    if kind == "pipeline.finished":
        speedup = f", speed-up {get('speedup')}×" if get("speedup") else ""
        return f"pipeline {get('name')} {get('status')}{speedup}"
    return ""
