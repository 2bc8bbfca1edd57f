"""Browser pages: thin views over the same services and selectors as the API, one module a page group.

- workspaces: the workspace list and creation, members, directory rules, ownership offers
- files: the tree with lock badges, a file at any version, history, diffs, downloads
- locks: the lock table and (force) release
- tasks: the task board, one task, the worklog, the approvals inbox
- activity: the live event feed
- search: search and ask, in one workspace or across all of them
- pipelines: pipeline runs, their stages and Gantt chart
"""
from workspace.views.activity import activity_page
from workspace.views.files import file_diff, file_history, file_raw, file_view, workspace_home
from workspace.views.locks import lock_release_view, locks_page
from workspace.views.pipelines import pipeline_page, pipelines_page
from workspace.views.search import global_search_page, search_page
from workspace.views.tasks import (
    approval_decide_view,
    approvals_page,
    task_board_page,
    task_page,
    worklog_page,
)
from workspace.views.workspaces import (
    members_action,
    members_page,
    offer_respond,
    transfer_offer_view,
    workspace_list,
)

__all__ = [
    "activity_page",
    "approval_decide_view",
    "approvals_page",
    "file_diff",
    "file_history",
    "file_raw",
    "file_view",
    "global_search_page",
    "lock_release_view",
    "locks_page",
    "members_action",
    "members_page",
    "offer_respond",
    "pipeline_page",
    "pipelines_page",
    "search_page",
    "task_board_page",
    "task_page",
    "transfer_offer_view",
    "workspace_home",
    "workspace_list",
    "worklog_page",
]
