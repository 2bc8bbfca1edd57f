"""Index state per file, the chunks of each indexed version, and the keyword postings.

The database is the truth about what is searchable: a vector in Chroma counts only while its
chunk row exists here, so a crash between the Chroma write and the database commit can leave a
stray vector (filtered out at query time) but never a missing or resurrected result.
The keyword index (postings and per-workspace totals) lives here too, so every web and worker
process on every host ranks with the same numbers, on SQLite and PostgreSQL alike.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

from workspace.models import Workspace


class IndexState(models.Model):
    """Where the index stands for one path of a workspace."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        INDEXED = "indexed", "Indexed"
        ERROR = "error", "Error"
        NOT_INDEXABLE = "not_indexable", "Not indexable"

    # The unique (workspace, path) index serves lookups by workspace: no separate index.
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    path = models.CharField(max_length=1024)
    # The newest version known to need indexing, and the version whose chunks are searchable.
    version = models.PositiveIntegerField()
    indexed_version = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    deleted = models.BooleanField(default=False)
    reason = models.TextField(blank=True, help_text="Why the file is not indexable, or the last error.")
    chunks = models.PositiveIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Failed runs for the pending version.")
    requeues = models.PositiveSmallIntegerField(default=0, help_text="Times the sweep found the job lost.")
    job_id = models.CharField(max_length=64, blank=True)
    queued_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "path"], name="index_state_unique")]
        indexes = [
            models.Index(fields=["status", "queued_at"], name="index_state_sweep_idx"),
            models.Index(fields=["workspace", "status"], name="index_state_ws_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.path}@{self.version}: {self.status}"


class Chunk(models.Model):
    """One chunk of the indexed version of a file."""

    # Deterministic (workspace, path, version, ordinal), so a retried job upserts the same vectors.
    vector_id = models.CharField(max_length=80, unique=True, help_text="The vector's id in Chroma.")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    path = models.CharField(max_length=1024)
    version = models.PositiveIntegerField()
    ordinal = models.PositiveIntegerField()
    start = models.PositiveIntegerField(help_text="Character offset in the version's text.")
    end = models.PositiveIntegerField()
    text = models.TextField()
    context = models.CharField(max_length=600, blank=True, help_text="Heading trail or CSV header.")
    sha = models.CharField(max_length=32, help_text="Hash of what was embedded, to reuse its vector.")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    task_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(help_text="When the version was written.")
    length = models.PositiveIntegerField(help_text="Keyword terms in the chunk (BM25 document length).")

    class Meta:
        indexes = [
            models.Index(fields=["workspace", "path"], name="chunk_path_idx"),
            models.Index(fields=["workspace", "sha"], name="chunk_sha_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.path}@{self.version}#{self.ordinal}"


class Posting(models.Model):
    """A keyword term in a chunk. The workspace and chunk length are copied in so that ranking
    reads one covering index and never joins; `impact` (the term's BM25 weight in the chunk when it
    was indexed) orders each term's postings so that ranking can read the best ones first."""

    chunk = models.ForeignKey(Chunk, on_delete=models.CASCADE, related_name="postings")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    term = models.CharField(max_length=64)
    tf = models.PositiveIntegerField()
    length = models.PositiveIntegerField()
    impact = models.FloatField()

    class Meta:
        indexes = [
            models.Index(fields=["term", "workspace", "-impact", "chunk", "tf", "length"], name="posting_term_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.term} in {self.chunk_id}"


class TermStats(models.Model):
    """Document frequency of a term in a workspace: how many searchable chunks contain it.
    Kept in step with the postings in the transaction that changes them, so that ranking reads one
    row per query term instead of counting postings."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+", db_index=False)
    term = models.CharField(max_length=64)
    df = models.IntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "term"], name="term_stats_unique")]

    def __str__(self) -> str:
        return f"{self.term}: {self.df}"


class KeywordStats(models.Model):
    """Totals over a workspace's searchable chunks, for BM25's N and average length."""

    workspace = models.OneToOneField(Workspace, on_delete=models.CASCADE, primary_key=True, related_name="+")
    chunks = models.BigIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.workspace_id}: {self.chunks} chunks"
