"""Browser pages (workspace/views/). Paths under /w/<ws>/ are one workspace's pages."""
from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from workspace import views

W = "w/<str:ws>"

# Page names start with "ws-" so that none is shared with an API route's. "workspace" is the
# exception: it is the workspace's home page, the name the transfer accept page redirects to; it
# wins over the API route of that name because these patterns come last in switchyard/urls.py.

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.workspace_list, name="home"),
    path("search/", views.global_search_page, name="global-search"),
    path("offers/<str:transfer_id>/", views.offer_respond, name="offer-respond"),
    path(f"{W}/", views.workspace_home, name="workspace"),
    path(f"{W}/files/<path:path>", views.file_view, name="ws-file"),
    path(f"{W}/raw/<path:path>", views.file_raw, name="ws-raw"),
    path(f"{W}/history/<path:path>", views.file_history, name="ws-history"),
    path(f"{W}/diff/<path:path>", views.file_diff, name="ws-diff"),
    path(f"{W}/locks/", views.locks_page, name="ws-locks"),
    path(f"{W}/locks/<str:lock_id>/release", views.lock_release_view, name="ws-lock-release"),
    path(f"{W}/tasks/", views.task_board_page, name="ws-tasks"),
    path(f"{W}/tasks/<str:task_id>/", views.task_page, name="ws-task"),
    path(f"{W}/worklog/", views.worklog_page, name="ws-worklog"),
    path(f"{W}/approvals/", views.approvals_page, name="ws-approvals"),
    path(f"{W}/approvals/<str:approval_id>/decide", views.approval_decide_view, name="ws-approval-decide"),
    path(f"{W}/activity/", views.activity_page, name="ws-activity"),
    path(f"{W}/search/", views.search_page, name="ws-search"),
    path(f"{W}/pipelines/", views.pipelines_page, name="ws-pipelines"),
    path(f"{W}/pipelines/<str:run_id>/", views.pipeline_page, name="ws-pipeline"),
    path(f"{W}/members/", views.members_page, name="ws-members"),
    path(f"{W}/members/action", views.members_action, name="ws-members-action"),
    path(f"{W}/transfer", views.transfer_offer_view, name="ws-transfer-offer"),
]

# The page behind an ownership transfer's accept link (issue 4).
from workspace.api.transfers import transfer_accept_page  # noqa: E402

urlpatterns += [
    path("transfers/<str:transfer_id>/accept", transfer_accept_page, name="transfer_accept"),
]
