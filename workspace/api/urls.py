"""API v1 routes. Resource URLs, one view per resource (STYLE rule 7)."""
from __future__ import annotations

from django.urls import path

from agents import api as accounts
from workspace.api import events, files, locks, workspaces

WS = "workspaces/<str:ws>"

# Django tries the patterns in order, and each one tried before the match costs a regular
# expression search: about 0.5 us in a loop, two or three times that in a request, where a lock
# URL at the end of the workspace routes took 25-35 us more to resolve than `me`. So the routes
# agents call around every write come first: the locks (issue 3; their benchmark holds a pair to
# 2.5 no-ops), then the files. No other route starts with theirs, so the order changes nothing else.
urlpatterns = [
    path("health", events.HealthView.as_view(), name="health"),
    path("me", accounts.MeView.as_view(), name="me"),
    path(f"{WS}/locks", locks.LocksView.as_view(), name="locks"),
    path(f"{WS}/locks/batch", locks.LockBatchView.as_view(), name="lock-batch"),
    path(f"{WS}/locks/<str:lock_id>", locks.LockView.as_view(), name="lock"),
    path(f"{WS}/locks/<str:lock_id>/renew", locks.LockRenewView.as_view(), name="lock-renew"),
    path(f"{WS}/files/<path:path>", files.FileView.as_view(), name="file"),
    path("agents", accounts.AgentsView.as_view(), name="agents"),
    path("tokens", accounts.TokensView.as_view(), name="tokens"),
    path("tokens/<str:token_id>", accounts.TokenDetailView.as_view(), name="token"),
    path("workspaces", workspaces.WorkspacesView.as_view(), name="workspaces"),
    path(f"{WS}", workspaces.WorkspaceDetailView.as_view(), name="workspace"),
    path(f"{WS}/members", workspaces.MembersView.as_view(), name="members"),
    path(f"{WS}/members/<str:username>", workspaces.MemberView.as_view(), name="member"),
    path(f"{WS}/rules", workspaces.RulesView.as_view(), name="rules"),
    path(f"{WS}/rules/<path:prefix>", workspaces.RuleView.as_view(), name="rule"),
    path(f"{WS}/layout", workspaces.LayoutView.as_view(), name="layout"),
    path(f"{WS}/tree", files.TreeView.as_view(), name="tree"),
    path(f"{WS}/history/<path:path>", files.HistoryView.as_view(), name="history"),
    path(f"{WS}/diff/<path:path>", files.DiffView.as_view(), name="diff"),
    path(f"{WS}/moves", files.MovesView.as_view(), name="moves"),
    path(f"{WS}/events", events.EventsView.as_view(), name="events"),
]

# Messages: topics, consumer groups, triggers (issue 10).
from workspace.api import messages as _messages  # noqa: E402

urlpatterns += [
    path(f"{WS}/topics", _messages.TopicsView.as_view(), name="topics"),
    path(f"{WS}/topics/<str:topic>/messages", _messages.TopicMessagesView.as_view(), name="topic-messages"),
    path(f"{WS}/topics/<str:topic>/groups/<str:group>", _messages.GroupView.as_view(), name="topic-group"),
    path(f"{WS}/topics/<str:topic>/groups/<str:group>/pull", _messages.GroupPullView.as_view(), name="topic-pull"),
    path(f"{WS}/topics/<str:topic>/groups/<str:group>/ack", _messages.GroupAckView.as_view(), name="topic-ack"),
    path(f"{WS}/triggers", _messages.TriggersView.as_view(), name="triggers"),
    path(f"{WS}/triggers/<str:name>", _messages.TriggerView.as_view(), name="trigger"),
]

# Tasks, worklog, approvals and ownership transfers (issue 4). `tasks/batch` and `tasks/claim`
# come before `tasks/<task_id>`, which would otherwise match them.
from workspace.api import approvals as _approvals  # noqa: E402
from workspace.api import tasks as _tasks  # noqa: E402
from workspace.api import transfers as _transfers  # noqa: E402
from workspace.api import worklog as _worklog  # noqa: E402

urlpatterns += [
    path(f"{WS}/tasks", _tasks.TasksView.as_view(), name="tasks"),
    path(f"{WS}/tasks/batch", _tasks.TaskBatchView.as_view(), name="task-batch"),
    path(f"{WS}/tasks/claim", _tasks.TaskClaimView.as_view(), name="task-claim"),
    path(f"{WS}/tasks/<str:task_id>", _tasks.TaskDetailView.as_view(), name="task"),
    path(f"{WS}/tasks/<str:task_id>/heartbeat", _tasks.TaskHeartbeatView.as_view(), name="task-heartbeat"),
    path(f"{WS}/tasks/<str:task_id>/complete", _tasks.TaskCompleteView.as_view(), name="task-complete"),
    path(f"{WS}/tasks/<str:task_id>/fail", _tasks.TaskFailView.as_view(), name="task-fail"),
    path(f"{WS}/tasks/<str:task_id>/cancel", _tasks.TaskCancelView.as_view(), name="task-cancel"),
    path(f"{WS}/tasks/<str:task_id>/reads", _tasks.TaskReadsView.as_view(), name="task-reads"),
    path(f"{WS}/worklog", _worklog.WorklogView.as_view(), name="worklog"),
    path(f"{WS}/worklog/verify", _worklog.WorklogVerifyView.as_view(), name="worklog-verify"),
    path(f"{WS}/approvals", _approvals.ApprovalsView.as_view(), name="approvals"),
    path(f"{WS}/approvals/<str:approval_id>", _approvals.ApprovalDetailView.as_view(), name="approval"),
    path(f"{WS}/approvals/<str:approval_id>/decide", _approvals.ApprovalDecideView.as_view(), name="approval-decide"),
    path(f"{WS}/transfers", _transfers.WorkspaceTransfersView.as_view(), name="workspace-transfers"),
    path("transfers/<str:transfer_id>", _transfers.TransferDetailView.as_view(), name="transfer"),
    path("transfers/<str:transfer_id>/accept", _transfers.TransferAcceptView.as_view(), name="transfer-accept-api"),
    path("transfers/<str:transfer_id>/cancel", _transfers.TransferCancelView.as_view(), name="transfer-cancel"),
]

# Intelligence: search, ask and index state (issue 5).
from search import api as _search  # noqa: E402

urlpatterns += [
    path("search", _search.SearchView.as_view(), name="search"),
    path(f"{WS}/search", _search.WorkspaceSearchView.as_view(), name="workspace-search"),
    path(f"{WS}/ask", _search.AskView.as_view(), name="workspace-ask"),
    path(f"{WS}/index", _search.IndexView.as_view(), name="workspace-index"),
]

# Pipelines (issue 6): the agents app's engine; `workspace` only routes to it.
from agents import api_pipelines as _pipelines  # noqa: E402

urlpatterns += [
    path(f"{WS}/pipelines", _pipelines.PipelinesView.as_view(), name="pipelines"),
    path(f"{WS}/pipelines/<str:run_id>", _pipelines.PipelineDetailView.as_view(), name="pipeline"),
    path(f"{WS}/pipelines/<str:run_id>/cancel", _pipelines.PipelineCancelView.as_view(), name="pipeline-cancel"),
]
