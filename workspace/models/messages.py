"""Topics, consumer groups and triggers (see workspace/services/messages.py and triggers.py).

A topic is an ordered, durable log of messages per workspace. Offsets come from a counter on the
topic row advanced inside the publishing transaction, so they are gap-free. A consumer group
tracks each message it has not finished as a `Delivery` row (pending or leased until
`visible_at`); acking deletes the row, and `cursor` says how far the log has been taken in.
"""
from __future__ import annotations

from django.conf import settings
from django.db import models

__all__ = ["ConsumerGroup", "Delivery", "Message", "Topic", "Trigger", "TriggerFiring"]


class Topic(models.Model):
    workspace = models.ForeignKey("workspace.Workspace", on_delete=models.CASCADE, related_name="topics")
    name = models.CharField(max_length=200)
    # The newest offset; advanced in the publishing transaction (gap-free, commit-ordered).
    last_offset = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="topic_name_unique")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.workspace_id}/{self.name}"


class Message(models.Model):
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="messages")
    offset = models.BigIntegerField()
    key = models.CharField(max_length=200, blank=True, default="")
    body = models.JSONField()
    # Set by the system only: where a dead letter came from.
    meta = models.JSONField(default=dict, blank=True)
    publisher = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    published_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["topic", "offset"], name="message_offset_unique")]
        ordering = ["offset"]

    def __str__(self) -> str:
        return f"{self.topic_id}@{self.offset}"


class ConsumerGroup(models.Model):
    topic = models.ForeignKey(Topic, on_delete=models.CASCADE, related_name="groups")
    name = models.CharField(max_length=100)
    # Every message with offset <= cursor has a Delivery row or has been acked / dead-lettered.
    cursor = models.BigIntegerField(default=0)
    max_deliveries = models.PositiveIntegerField(default=5)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["topic", "name"], name="group_name_unique")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.topic_id}/{self.name}"


class Delivery(models.Model):
    """A message its group has not finished: pending (`visible_at` null) or leased until `visible_at`."""

    group = models.ForeignKey(ConsumerGroup, on_delete=models.CASCADE, related_name="deliveries")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    offset = models.BigIntegerField()
    key = models.CharField(max_length=200, blank=True, default="")
    deliveries = models.PositiveIntegerField(default=0)
    visible_at = models.DateTimeField(null=True, blank=True)
    consumer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "offset"], name="delivery_offset_unique")]
        indexes = [
            models.Index(fields=["group", "key", "offset"], name="delivery_key_idx"),
            models.Index(fields=["visible_at"], name="delivery_visible_idx"),
        ]
        ordering = ["offset"]

    def __str__(self) -> str:
        return f"{self.group_id}@{self.offset} x{self.deliveries}"


class Trigger(models.Model):
    """Creates a task for each matching event (`event_type`, `prefix`) or each message of `topic`."""

    workspace = models.ForeignKey("workspace.Workspace", on_delete=models.CASCADE, related_name="triggers")
    name = models.CharField(max_length=100)
    event_type = models.CharField(max_length=64, blank=True, default="")
    prefix = models.CharField(max_length=1024, blank=True, default="")
    topic = models.CharField(max_length=200, blank=True, default="")
    create_task = models.JSONField(default=dict)
    # The account that last defined the trigger: its tasks are created with this account's access.
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Every source (event seq or message offset) up to here has been handled, in the same
    # transaction that created its task.
    cursor = models.BigIntegerField(default=0)
    enabled = models.BooleanField(default=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="trigger_name_unique"),
            models.CheckConstraint(
                condition=(models.Q(event_type="") & ~models.Q(topic="")) | (~models.Q(event_type="") & models.Q(topic="")),
                name="trigger_one_source",
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "event_type"], name="trigger_event_idx"),
            models.Index(fields=["workspace", "topic"], name="trigger_topic_idx"),
        ]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.workspace_id}/{self.name}"


class TriggerFiring(models.Model):
    """One firing per trigger and source: the unique constraint is the exactly-once backstop."""

    trigger = models.ForeignKey(Trigger, on_delete=models.CASCADE, related_name="firings")
    # The event's seq or the message's offset, depending on the trigger's source.
    source = models.BigIntegerField()
    task_id = models.CharField(max_length=32, blank=True, default="")
    error = models.TextField(blank=True, default="")
    fired_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["trigger", "source"], name="trigger_firing_unique")]
        ordering = ["source"]

    def __str__(self) -> str:
        return f"{self.trigger_id}<-{self.source}"
