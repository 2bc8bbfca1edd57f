"""Accounts: humans (browser sessions, personal tokens) and agents (API tokens)."""
from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    class Kind(models.TextChoices):
        HUMAN = "human", "Human"
        AGENT = "agent", "Agent"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.HUMAN)
    # The human who created an agent account: every event the agent causes names them.
    created_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="agents_created"
    )

    @property
    def is_agent(self) -> bool:
        return self.kind == self.Kind.AGENT

    @property
    def on_behalf_of(self) -> User | None:
        return self.created_by if self.is_agent else None


class ApiToken(models.Model):
    """A bearer token. Only its SHA-256 digest is stored; the secret is shown once."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="The first characters, to recognise a token.")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user.username})"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


# -- pipelines (agents/pipelines/) ----------------------------------------------------------------
class PipelineRun(models.Model):
    """One submitted pipeline: its spec, the plan it expanded to, and what it measured.

    Each step of the plan is a workspace task (`PipelineStep.task`), so the task board shows the
    run; the run itself only adds what tasks do not know: the DAG's shape and its timings.
    """

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    workspace = models.ForeignKey("workspace.Workspace", on_delete=models.CASCADE, related_name="pipeline_runs")
    # Per-workspace submission order (the list order and its cursor).
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    spec = models.JSONField()
    # {"waves": [[step keys]], "artifacts": {name: producer key or file path}, "rate_limits": {...}}
    plan = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    # Submitted by an operator (a superuser, or `manage.py run_pipeline`): may run any command.
    trusted = models.BooleanField(default=False)
    created_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    # Measured when the run ends: makespan, sum of step durations, speed-up, critical path.
    metrics = models.JSONField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "number"], name="pipeline_run_number_unique")]
        indexes = [models.Index(fields=["status", "created_at"], name="pipeline_run_status_idx")]
        ordering = ["-number"]

    def __str__(self) -> str:
        return f"{self.id} {self.name!r} ({self.status})"


class PipelineStep(models.Model):
    """One step of a run's expanded plan, and the task that carries it."""

    run = models.ForeignKey(PipelineRun, on_delete=models.CASCADE, related_name="steps")
    key = models.CharField(max_length=200)
    task = models.OneToOneField("workspace.Task", on_delete=models.CASCADE, related_name="pipeline_step")
    agent = models.CharField(max_length=100)
    # step | branch | aggregate | stage | collect | attempt | judge
    role = models.CharField(max_length=10, default="step")
    # The spec step a pattern expanded this one from ("" for a plain step).
    group = models.CharField(max_length=100, blank=True, default="")
    wave = models.PositiveIntegerField(default=0)
    # Everything the runner needs: params, inputs, outputs, policies (see agents/pipelines/spec.py).
    config = models.JSONField(default=dict)
    # What the step wrote: {artifact: {"path", "version", "sha256", "size"}}.
    outputs = models.JSONField(default=dict, blank=True)
    # A competition attempt's score; a judge's chosen attempt (set once, by a conditional UPDATE).
    score = models.FloatField(null=True, blank=True)
    winner = models.CharField(max_length=200, blank=True, default="")
    # The current (or last) attempt, on the database clock.
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set once the failure handling (inputs to failed/) has run for a failed step.
    failure_handled = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="pipeline_step_key_unique")]
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.run_id}:{self.key}"
