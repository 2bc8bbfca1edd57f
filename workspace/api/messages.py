"""Topics, consumer groups and triggers over HTTP (API.md "Messages")."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from workspace.access import workspace_for
from workspace.api.base import ApiView, idempotent, raw_body
from workspace.api.pagination import decode_cursor, encode_cursor, keyset_page, parse_int, parse_limit
from workspace.api.schema import errors, page_of
from workspace.models import Role, Trigger
from workspace.services import messages as svc
from workspace.services import triggers as trig


class MessageOutput(serializers.Serializer):
    topic = serializers.CharField()
    offset = serializers.IntegerField()
    key = serializers.CharField(allow_null=True)
    body = serializers.DictField()
    meta = serializers.DictField()
    publisher = serializers.CharField(allow_null=True)
    published_at = serializers.DateTimeField()


class LeaseOutput(serializers.Serializer):
    offset = serializers.IntegerField()
    key = serializers.CharField(allow_null=True)
    body = serializers.DictField()
    meta = serializers.DictField()
    deliveries = serializers.IntegerField()
    published_at = serializers.DateTimeField()
    lease_expires_at = serializers.DateTimeField()


class TopicOutput(serializers.Serializer):
    name = serializers.CharField()
    last_offset = serializers.IntegerField()
    created_at = serializers.DateTimeField()


_TOPIC = OpenApiParameter("topic", str, OpenApiParameter.PATH, description="Topic name, [a-z0-9._-]")
_GROUP = OpenApiParameter("group", str, OpenApiParameter.PATH, description="Consumer group name, [a-z0-9._-]")


class TopicsView(ApiView):
    @extend_schema(operation_id="topic_list", responses={200: page_of("TopicPage", TopicOutput()),
                                                         **errors(400, 401, 404)})
    def get(self, request: Request, ws: str) -> Response:
        """The workspace's topics the caller may read (others' inboxes are left out), by name."""
        access = workspace_for(request.user, ws)
        return Response(keyset_page(svc.topics_visible(access=access), request=request, scope=f"topics:{ws}",
                                    key="name", render=lambda rows: [svc.topic_json(t) for t in rows]))


class TopicMessagesView(ApiView):
    @extend_schema_serializer(component_name="MessagePublishInput")
    class InputSerializer(serializers.Serializer):
        body = serializers.JSONField()
        key = serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=svc.KEY_MAX,
                                    trim_whitespace=False)

    @extend_schema(operation_id="message_list", parameters=[
        _TOPIC,
        OpenApiParameter("after", int, description="Only messages with a larger offset (replay from here)"),
    ], responses={200: page_of("MessagePage", MessageOutput()), **errors(400, 401, 404)})
    def get(self, request: Request, ws: str, topic: str) -> Response:
        """The topic's log in offset order, from any offset."""
        access = workspace_for(request.user, ws)
        svc.check_read(access, topic)
        limit = parse_limit(request.query_params.get("limit"))
        after = parse_int(request.query_params.get("after"), "after", default=0) or 0
        scope = f"topic:{ws}:{topic}"
        cursor = request.query_params.get("cursor")
        if cursor:
            after = max(after, int(decode_cursor(scope, cursor)))
        rows = svc.messages_after(workspace_id=access.workspace_id, topic=topic, after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return Response({"results": rows, "next": encode_cursor(scope, rows[-1]["offset"]) if more else None})

    @extend_schema(operation_id="message_publish", parameters=[_TOPIC], request=InputSerializer,
                   responses={201: MessageOutput, **errors(400, 401, 403, 404, 413)})
    @idempotent
    def post(self, request: Request, ws: str, topic: str) -> Response:
        """Append a message; the response carries its offset. Needs the editor role."""
        access = workspace_for(request.user, ws, need=Role.EDITOR)
        data = self.data(self.InputSerializer)
        message = svc.message_publish(access=access, topic=topic, body=data["body"], key=data.get("key"))
        return Response(svc.message_json(message, topic, request.user.username), status=status.HTTP_201_CREATED)


class GroupView(ApiView):
    @extend_schema(operation_id="group_get", parameters=[_TOPIC, _GROUP], responses={
        200: inline_serializer("GroupState", {
            "topic": serializers.CharField(), "group": serializers.CharField(),
            "max_deliveries": serializers.IntegerField(), "last_offset": serializers.IntegerField(),
            "cursor": serializers.IntegerField(), "in_flight": serializers.IntegerField(),
            "backlog": serializers.IntegerField(), "created_at": serializers.DateTimeField()}),
        **errors(400, 401, 404)})
    def get(self, request: Request, ws: str, topic: str, group: str) -> Response:
        """A consumer group's progress: messages leased now (`in_flight`) and not yet acked (`backlog`)."""
        access = workspace_for(request.user, ws)
        return Response(svc.group_state(access=access, topic=topic, group=group))


class GroupPullView(ApiView):
    @extend_schema_serializer(component_name="GroupPullInput")
    class InputSerializer(serializers.Serializer):
        max = serializers.IntegerField(min_value=1, max_value=svc.PULL_MAX, default=10)
        visibility_seconds = serializers.FloatField(min_value=svc.VISIBILITY_MIN, max_value=svc.VISIBILITY_MAX,
                                                    default=30)
        wait_seconds = serializers.FloatField(min_value=0, max_value=svc.WAIT_MAX, default=0)
        max_deliveries = serializers.IntegerField(min_value=1, max_value=100, required=False, allow_null=True)

    @extend_schema(operation_id="group_pull", parameters=[_TOPIC, _GROUP], request=InputSerializer, responses={
        200: inline_serializer("Pulled", {"results": serializers.ListField(child=LeaseOutput())}),
        **errors(400, 401, 403, 404)})
    def post(self, request: Request, ws: str, topic: str, group: str) -> Response:
        """Lease up to `max` messages for `visibility_seconds`; `wait_seconds` long-polls. A message not
        acked in time comes back with `deliveries` raised; past `max_deliveries` it goes to `<topic>.dead`."""
        # Read the raw body before parsing it, so an Idempotency-Key fingerprint covers it.
        raw_body(request, limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        access = workspace_for(request.user, ws)
        data = self.data(self.InputSerializer)
        if request.headers.get("Idempotency-Key") is None:
            leases = svc.group_pull(access=access, topic=topic, group=group, limit=data["max"],
                                    visibility_seconds=data["visibility_seconds"],
                                    wait_seconds=data["wait_seconds"], max_deliveries=data.get("max_deliveries"))
            return Response({"results": [lease.as_json() for lease in leases]})
        # With a key the lease and its stored response share one transaction, so wait first,
        # outside any transaction, then lease once.
        if data["wait_seconds"]:
            svc.group_wait(access=access, topic=topic, group=group, wait_seconds=data["wait_seconds"],
                           max_deliveries=data.get("max_deliveries"))
        return self._lease_once(request, ws, topic, group, access=access, data=data)

    @idempotent
    def _lease_once(self, request: Request, ws: str, topic: str, group: str, *, access: Any,
                    data: dict[str, Any]) -> Response:
        leases = svc.group_pull(access=access, topic=topic, group=group, limit=data["max"],
                                visibility_seconds=data["visibility_seconds"], wait_seconds=0,
                                max_deliveries=data.get("max_deliveries"))
        return Response({"results": [lease.as_json() for lease in leases]})


class GroupAckView(ApiView):
    @extend_schema_serializer(component_name="GroupAckInput")
    class InputSerializer(serializers.Serializer):
        offsets = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**62),
                                        min_length=1, max_length=svc.ACK_MAX)

    @extend_schema(operation_id="group_ack", parameters=[_TOPIC, _GROUP], request=InputSerializer, responses={
        200: inline_serializer("Acked", {"acked": serializers.ListField(child=serializers.IntegerField()),
                                         "skipped": serializers.ListField(child=serializers.IntegerField())}),
        **errors(400, 401, 403, 404)})
    @idempotent
    def post(self, request: Request, ws: str, topic: str, group: str) -> Response:
        """Finish delivered messages for the group. `skipped` lists offsets that were not outstanding
        deliveries (already acked or dead-lettered, or never delivered)."""
        access = workspace_for(request.user, ws)
        data = self.data(self.InputSerializer)
        return Response(svc.group_ack(access=access, topic=topic, group=group, offsets=data["offsets"]))


class TriggerOutput(serializers.Serializer):
    name = serializers.CharField()
    on = serializers.DictField()
    create_task = serializers.DictField()
    created_by = serializers.CharField()
    enabled = serializers.BooleanField()
    cursor = serializers.IntegerField()
    last_error = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TriggersView(ApiView):
    @extend_schema(operation_id="trigger_list", responses={200: page_of("TriggerPage", TriggerOutput()),
                                                           **errors(400, 401, 403, 404)})
    def get(self, request: Request, ws: str) -> Response:
        """The workspace's triggers by name (admins)."""
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        rows = Trigger.objects.filter(workspace=access.workspace).select_related("created_by")
        return Response(keyset_page(rows, request=request, scope=f"triggers:{ws}", key="name",
                                    render=lambda page: [trig.trigger_json(t) for t in page]))


class TriggerView(ApiView):
    @extend_schema_serializer(component_name="TriggerInput")
    class InputSerializer(serializers.Serializer):
        on = serializers.JSONField()
        create_task = serializers.JSONField()

    _NAME = OpenApiParameter("name", str, OpenApiParameter.PATH, description="Trigger name, [a-z0-9._-]")

    @extend_schema(operation_id="trigger_get", parameters=[_NAME], responses={200: TriggerOutput,
                                                                               **errors(400, 401, 403, 404)})
    def get(self, request: Request, ws: str, name: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        return Response(trig.trigger_json(trig.trigger_get(access=access, name=name)))

    @extend_schema(operation_id="trigger_set", parameters=[_NAME], request=InputSerializer,
                   responses={200: TriggerOutput, 201: TriggerOutput, **errors(400, 401, 403, 404)})
    @idempotent
    def put(self, request: Request, ws: str, name: str) -> Response:
        """Create or replace a trigger: each matching event (`{"event", "prefix"?}`) or message of a topic
        (`{"topic"}`) creates a task from `create_task`, with the event or message under `payload.trigger`."""
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        data = self.data(self.InputSerializer)
        trigger, created = trig.trigger_set(access=access, name=name, on=data["on"], create_task=data["create_task"])
        return Response(trig.trigger_json(trigger), status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(operation_id="trigger_delete", parameters=[_NAME], responses={204: None,
                                                                                  **errors(400, 401, 403, 404)})
    @idempotent
    def delete(self, request: Request, ws: str, name: str) -> Response:
        access = workspace_for(request.user, ws, need=Role.ADMIN)
        trig.trigger_delete(access=access, name=name)
        return Response(status=status.HTTP_204_NO_CONTENT)
